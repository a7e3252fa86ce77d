// `airroot init`: the node's boot as /init (PID 1) in the initramfs; `init keep-sshd` is the debug sshd supervisor,
// `init report` the boot reporter PID 1 leaves behind at switch_root, `init booted` what the booted system runs to
// tell it the boot finished.
import { defineCommand } from "citty";
import { runInit } from "../boot/boot";
import { superviseSshd } from "../boot/sshd";
import { readReporterInput, runReporter, sendBooted, REPORT_SOCKET } from "../boot/reporter";

const keepSshd = defineCommand({
  meta: { name: "keep-sshd", description: "Run the debug sshd (port 2222) and restart it whenever it exits (started by init)", hidden: true },
  args: {
    config: { type: "string", description: "sshd_config to use", required: true },
    sshd: { type: "string", description: "sshd binary (absolute path)", default: "/usr/sbin/sshd" },
  },
  run: async ({ args }) => {
    await superviseSshd({ config: args.config, sshd: args.sshd });
  },
});

const report = defineCommand({
  meta: { name: "report", description: "The boot reporter (started by init before switch_root; reads its input on stdin)", hidden: true },
  run: async () => {
    await runReporter(await readReporterInput());
    process.exit(0);
  },
});

const booted = defineCommand({
  meta: { name: "booted", description: "Tell the boot reporter that the booted system is up (run by airroot-booted.service)" },
  args: { socket: { type: "string", description: "the reporter's socket", default: REPORT_SOCKET } },
  run: async ({ args }) => {
    try {
      console.log(`airroot boot reporter: ${await sendBooted(args.socket)}`);
    } catch (e) {
      // Not a failure of the booted system: it is up. The reporter (if any) reports what it knows.
      console.log(`airroot boot reporter not told: ${(e as Error).message}`);
    }
  },
});

const SUBCOMMANDS = new Set(["keep-sshd", "report", "booted"]);

export const initCommand = defineCommand({
  meta: {
    name: "init",
    description: "Boot a diskless node: run as /init (PID 1) in the airroot initramfs; options come from airroot.* on the kernel command line",
  },
  args: {
    cmdline: { type: "string", description: "Use this kernel command line instead of /proc/cmdline (test harnesses)" },
  },
  subCommands: { "keep-sshd": keepSshd, report, booted },
  run: async ({ args, rawArgs }) => {
    if (SUBCOMMANDS.has(rawArgs[0])) return; // handled by the subcommand
    if (process.pid !== 1) {
      // It mounts over /proc /dev /run, chmods / and switches root: never on a running system by accident.
      console.error("airroot init: must run as PID 1 (the initramfs's /init, or a test's PID namespace); refusing");
      process.exit(2);
    }
    await runInit({ cmdline: args.cmdline });
    // As PID 1, runInit only returns when the rescue shell loop was bounded (never in a real boot); do not exit.
    if (process.pid === 1) await new Promise(() => {});
  },
});
