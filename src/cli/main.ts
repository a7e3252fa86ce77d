#!/usr/bin/env bun
// airroot's single entry point: every mode (init, mount, serve, image, node, ...) is a subcommand, loaded lazily
// so that `airroot init` as PID 1 does not pay for the server's code.
import { defineCommand, runCommand, renderUsage } from "citty";

import { version } from "../version.ts";
export { version };

const main = defineCommand({
  meta: { name: "airroot", version, description: "Diskless boot for HPC clusters: on-demand multipath HTTPS root filesystem" },
  args: {
    selftest: { type: "boolean", description: "check the whole chain safely on this machine (loopback only) and exit" },
  },
  subCommands: {
    mount: () => import("./mount").then((m) => m.mountCommand),
    status: () => import("./status").then((m) => m.statusCommand),
    umount: () => import("./status").then((m) => m.umountCommand),
    image: () => import("./image").then((m) => m.imageCommand),
    serve: () => import("./serve").then((m) => m.serveCommand),
    node: () => import("./node").then((m) => m.nodeCommand),
    enroll: () => import("./enroll").then((m) => m.enrollCommand),
    init: () => import("./init").then((m) => m.initCommand),
    tpm: () => import("./tpm").then((m) => m.tpmCommand),
    media: () => import("./media").then((m) => m.mediaCommand),
  },
  async run({ args, rawArgs }) {
    if (args.selftest) {
      const { runSelftest } = await import("../selftest/selftest");
      process.exit(await runSelftest());
    }
    if (rawArgs.length === 0) console.log(await renderUsage(main));
  },
});

type AnyCommand = Parameters<typeof renderUsage>[0];

/** The (sub)command that `--help` refers to: follow leading words that name subcommands. */
async function commandForHelp(argv: string[]): Promise<[AnyCommand, AnyCommand | undefined]> {
  let cmd: AnyCommand = main as AnyCommand, parent: AnyCommand | undefined;
  for (const word of argv) {
    if (word.startsWith("-")) break;
    const subs = (typeof cmd.subCommands === "function" ? await cmd.subCommands() : await cmd.subCommands) as Record<string, any> | undefined;
    const next = subs?.[word];
    if (!next) break;
    parent = cmd;
    cmd = typeof next === "function" ? await next() : await next;
  }
  return [cmd, parent];
}

async function runCli(argv: string[]): Promise<void> {
  if (argv.length === 1 && (argv[0] === "--version" || argv[0] === "-v")) { console.log(version); return; }
  if (argv.includes("--help") || argv.includes("-h")) {
    const [cmd, parent] = await commandForHelp(argv);
    console.log(await renderUsage(cmd, parent));
    return;
  }
  try {
    await runCommand(main, { rawArgs: argv });
  } catch (e) {
    const err = e as Error & { code?: string };
    if (err.code === "E_UNKNOWN_COMMAND" || err.code === "EARG" || err.code === "E_NO_COMMAND") {
      console.error(`airroot: ${err.message} (see \`airroot --help\`)`);
    } else {
      console.error(`airroot: ${err.message}`);
      if (process.env.AIRROOT_DEBUG) console.error(err.stack);
    }
    process.exit(1);
  }
}

await runCli(process.argv.slice(2));
