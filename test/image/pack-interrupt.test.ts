// Ctrl-C or SIGTERM during `airroot image pack` stops mksquashfs and leaves nothing behind in images/: no partial
// image, no stray mksquashfs, no record.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readdirSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { privateAirroot } from "../helpers/boot";

afterAll(() => removeScratchDirs());

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  test(`${sig} during mksquashfs: exit ${sig === "SIGINT" ? 130 : 143}, no partial image, no mksquashfs left`, async () => {
    const airroot = privateAirroot();
    const state = join(scratchDir(), "state");
    Bun.spawnSync([airroot, "serve", "init", "--state", state, "--address", "127.0.0.1"]);
    // A tree big enough that mksquashfs is still running when the signal comes.
    const p = Bun.spawn([airroot, "image", "pack", "/usr", "--profile", "big", "--state", state], { stdout: "pipe", stderr: "pipe" });
    const images = join(state, "images");
    for (let i = 0; i < 200 && !readdirSync(images).some((f) => f.startsWith(".pack-")); i++) await Bun.sleep(50);
    expect(readdirSync(images).some((f) => f.startsWith(".pack-"))).toBe(true);
    p.kill(sig);
    const code = await Promise.race([p.exited, Bun.sleep(20_000).then(() => "still running")]);
    const err = await new Response(p.stderr).text();
    expect(code).toBe(sig === "SIGINT" ? 130 : 143);
    expect(err + (await new Response(p.stdout).text())).toMatch(/stopped mksquashfs, removed the partial image/);
    expect(readdirSync(images)).toEqual([]);
    await Bun.sleep(300);
    const left = Bun.spawnSync(["pgrep", "-f", `mksquashfs /usr ${images}`]).stdout.toString().trim();
    expect(left).toBe("");
    const list = Bun.spawnSync([airroot, "image", "list", "--state", state], { stdout: "pipe" }).stdout.toString();
    expect(list).not.toMatch(/big/);
  }, 180_000);
}
