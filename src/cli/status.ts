// `airroot status` and `airroot umount`: talk to a running mount daemon over its status socket.
import { defineCommand } from "citty";
import { resolve } from "node:path";
import { fetchAllStatus, fetchStatus, formatStatus, requestUnmount, statusLogPath } from "../mount/status";
import { fetchHolderStatus } from "../mount/takeover";
import { mountMetrics } from "../mount/metrics";

export const statusCommand = defineCommand({
  meta: { name: "status", description: "Show a mount daemon's sources (state, RTT, bytes, errors), cache and reads in flight; without MOUNTPOINT, every running mount daemon's (on a booted node: the root's)" },
  args: {
    mountpoint: { type: "positional", description: "the mount point given to `airroot mount` (default: every mount daemon)", required: false },
    json: { type: "boolean", description: "print the raw status as JSON" },
    log: { type: "boolean", description: "print the detached daemon's log (connections, failovers, errors)" },
    prometheus: { type: "boolean", description: "print the metrics in Prometheus text format, for node_exporter's textfile collector: `airroot status /mnt/image --prometheus > DIR/airroot.prom.$$ && mv DIR/airroot.prom.$$ DIR/airroot.prom`" },
  },
  async run({ args }) {
    if (args.prometheus) { process.stdout.write(await mountMetrics(args.mountpoint ? resolve(args.mountpoint) : undefined)); return; }
    if (!args.mountpoint) {
      if (args.log) throw new Error("status --log: name the MOUNTPOINT whose log to show");
      const all = await fetchAllStatus();
      if (!all.length) throw new Error("no airroot mount daemon is running here (no status socket answered in /run/airroot/mounts)");
      console.log(args.json ? JSON.stringify(all, null, 2) : all.map(formatStatus).join("\n\n"));
      return;
    }
    if (args.log) {
      const path = statusLogPath(resolve(args.mountpoint));
      const file = Bun.file(path);
      if (!(await file.exists())) throw new Error(`no daemon log for ${args.mountpoint} (${path}); was it mounted with --foreground?`);
      process.stdout.write(await file.text());
      return;
    }
    const mp = resolve(args.mountpoint);
    let status;
    try {
      status = await fetchStatus(mp);
    } catch (e) {
      // No daemon answers: between a crash and its restart the holder still knows the mount.
      const h = await fetchHolderStatus(mp).catch(() => undefined);
      if (!h) throw e;
      if (args.json) { console.log(JSON.stringify(h, null, 2)); return; }
      const last = h.holder.lastExit;
      console.log(`${mp}: no daemon is serving right now (readers wait); holder pid ${h.holder.pid} (${h.holder.argv0}), ` +
        `daemon restarts ${h.holder.restarts}, ${h.daemonPid ? `daemon pid ${h.daemonPid} starting` : "restart pending (backoff)"}` +
        (last ? `\nlast daemon exit: ${last.how} at ${last.at}` + (last.said ? `: ${last.said}` : "") + (last.recovered ? "" : "; requests in flight then cannot be recovered (no FUSE_NOTIFY_RESEND)") : ""));
      return;
    }
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
