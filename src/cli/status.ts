// `airroot status` and `airroot umount`: talk to a running mount daemon over its status socket.
import { defineCommand } from "citty";
import { resolve } from "node:path";
import { fetchStatus, formatStatus, requestUnmount, statusLogPath } from "../mount/status";

export const statusCommand = defineCommand({
  meta: { name: "status", description: "Show a mount daemon's sources (state, RTT, bytes, errors), cache and reads in flight" },
  args: {
    mountpoint: { type: "positional", description: "the mount point given to `airroot mount`", required: true },
    json: { type: "boolean", description: "print the raw status as JSON" },
    log: { type: "boolean", description: "print the detached daemon's log (connections, failovers, errors)" },
  },
  async run({ args }) {
    if (args.log) {
      const path = statusLogPath(resolve(args.mountpoint));
      const file = Bun.file(path);
      if (!(await file.exists())) throw new Error(`no daemon log for ${args.mountpoint} (${path}); was it mounted with --foreground?`);
      process.stdout.write(await file.text());
      return;
    }
    const status = await fetchStatus(resolve(args.mountpoint));
    console.log(args.json ? JSON.stringify(status, null, 2) : formatStatus(status));
  },
});

export const umountCommand = defineCommand({
  meta: { name: "umount", description: "Ask the mount daemon of MOUNTPOINT to unmount and exit (plain `umount MOUNTPOINT` works too)" },
  args: { mountpoint: { type: "positional", description: "the mount point", required: true } },
  async run({ args }) {
    const mp = resolve(args.mountpoint);
    await requestUnmount(mp);
    for (let i = 0; i < 100; i++) {
      if (!(await Bun.file("/proc/self/mounts").text()).split("\n").some((l) => l.split(" ")[1] === mp)) {
        console.log(`unmounted ${mp}`);
        return;
      }
      await Bun.sleep(100);
    }
    throw new Error(`${mp} is still mounted 10 s after the daemon was asked to stop (is something using it? try umount -l)`);
  },
});
