// `airroot node media attach|detach|status` driven through the built binary (a private copy of dist/airroot) against a
// Redfish service on loopback. No real BMC exists here: test/helpers/redfish.ts is a small Redfish server written
// for these tests that follows the DMTF Redfish schemas (ServiceRoot, SessionService, ManagerCollection, Manager,
// VirtualMediaCollection, VirtualMedia with InsertMedia/EjectMedia, ComputerSystem with Boot and Reset,
// @Redfish.AllowableValues, ActionInfo, Redfish error replies); its options model what real BMCs (XCC, iDRAC, iLO,
// OpenBMC) differ in. The variants: InsertMedia; only PATCH (the action answers 405, 404 or is absent); basic auth
// only; wrong password; a slot already holding another image (refused, or ejected with --force); power off and on;
// media under the Manager or the System; an ActionInfo; the certificate checked by CA, pinned, or refused.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { privateAirroot } from "../helpers/boot";
import { makeTestPki } from "../helpers/pki";
import { runBinary, startRedfish, REDFISH_PASSWORD, REDFISH_USER, type RedfishOptions, type RedfishServer } from "../helpers/redfish";

let bin = "";
let dir = "";
let pwFile = "";
const servers: RedfishServer[] = [];
const ISO = "http://10.0.2.100/boot/n001.iso";

beforeAll(() => {
  bin = privateAirroot();
  dir = scratchDir("airroot-bmc-");
  pwFile = join(dir, "bmc-password");
  writeFileSync(pwFile, `${REDFISH_PASSWORD}\n`);
  chmodSync(pwFile, 0o600);
});
afterAll(async () => { for (const s of servers) await s.close(); removeScratchDirs(); });

async function bmc(o: RedfishOptions = {}): Promise<RedfishServer> {
  const s = await startRedfish(dir, { pki: sharedPki(), ...o });
  servers.push(s);
  return s;
}
let pki: ReturnType<typeof makeTestPki> | undefined;
const sharedPki = () => (pki ??= makeTestPki(join(dir, "bmc-pki")));

const airroot = (args: string[], env: Record<string, string> = {}) => runBinary(bin, args, env);

const auth = (s: RedfishServer, trust: "ca" | "pin" = "ca") =>
  ["--bmc", s.url, "--user", REDFISH_USER, "--password-file", pwFile, ...(trust === "ca" ? ["--bmc-ca", s.caFile] : ["--bmc-fingerprint", `sha256:${s.fingerprint}`])];

describe("attach", () => {
  test("InsertMedia, one-time boot to CD, power On when off; the session is deleted", async () => {
    const s = await bmc({ power: "Off" });
    const r = await airroot(["node", "media", "attach", "n001", ...auth(s), "--url", ISO]);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toContain("logged in as admin (Redfish session)");
    expect(r.out).toContain(`inserted ${ISO} (InsertMedia)`);
    expect(r.out).toContain("boot override: Cd once");
    expect(r.out).toContain("power Off: On");
    expect(r.out).toContain("logged out");
    expect(s.slots.get("CD1")).toMatchObject({ Image: ISO, Inserted: true, WriteProtected: true, ConnectedVia: "URI" });
    expect(s.slots.get("USB1")!.Inserted).toBe(false);
    expect(s.system.Boot).toMatchObject({ BootSourceOverrideTarget: "Cd", BootSourceOverrideEnabled: "Once" });
    expect(s.system.resets).toEqual(["On"]);
    expect(s.sessions.size).toBe(0);
    const insert = s.log.find((l) => l.path.endsWith("VirtualMedia.InsertMedia"))!;
    expect(insert.body).toEqual({ Image: ISO, Inserted: true, WriteProtected: true });
    expect(s.log.filter((l) => l.path !== "/redfish/v1/" && !l.path.endsWith("/Sessions")).every((l) => l.auth === "session")).toBe(true);
    expect(r.out).not.toContain(REDFISH_PASSWORD);
  });

  test("a system that is on gets ForceRestart; the certificate pinned by fingerprint", async () => {
    const s = await bmc({ power: "On" });
    const r = await airroot(["node", "media", "attach", "n001", ...auth(s, "pin"), "--url", ISO]);
    expect(r.err).toBe("");
    expect(r.out).toContain(`certificate pinned sha256:${s.fingerprint}`);
    expect(r.out).toContain("power On: ForceRestart");
    expect(s.system.resets).toEqual(["ForceRestart"]);
  });

  test("--power graceful picks GracefulRestart; --power none and --no-boot-override leave both alone", async () => {
    const s = await bmc({ power: "On" });
    let r = await airroot(["node", "media", "attach", "n001", ...auth(s), "--url", ISO, "--power", "graceful"]);
    expect(r.code).toBe(0);
    expect(s.system.resets).toEqual(["GracefulRestart"]);
    const t = await bmc({ power: "On" });
    r = await airroot(["node", "media", "attach", "n001", ...auth(t), "--url", ISO, "--power", "none", "--no-boot-override"]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("left as it is (--power none)");
    expect(t.system.resets).toEqual([]);
    expect(t.system.Boot.BootSourceOverrideEnabled).toBe("Disabled");
    expect(t.slots.get("CD1")!.Image).toBe(ISO);
  });

  test("a ResetType outside the allowable values is never sent", async () => {
    const s = await bmc({ power: "On", resetTypes: ["On", "ForceOff", "GracefulRestart"] });
    const r = await airroot(["node", "media", "attach", "n001", ...auth(s), "--url", ISO]);
    expect(r.code).toBe(0);
    expect(s.system.resets).toEqual(["GracefulRestart"]);
  });

  for (const actions of [405, 404, "absent"] as const) {
    test(`InsertMedia ${actions === "absent" ? "absent" : `answering ${actions}`}: the image is set by PATCH of Image/Inserted`, async () => {
      const s = await bmc({ actions });
      const r = await airroot(["node", "media", "attach", "n001", ...auth(s), "--url", ISO]);
      expect(r.err).toBe("");
      expect(r.out).toContain(`inserted ${ISO} (PATCH)`);
      if (actions !== "absent") expect(r.out).toContain(`InsertMedia answered HTTP ${actions}: setting Image by PATCH instead`);
      const p = s.log.find((l) => l.method === "PATCH" && l.path.endsWith("/VirtualMedia/CD1"))!;
      expect(p.body).toEqual({ Image: ISO, Inserted: true, WriteProtected: true });
      expect(s.slots.get("CD1")).toMatchObject({ Image: ISO, Inserted: true });
    });
  }

  test("neither InsertMedia nor PATCH: a clear error naming both replies' step", async () => {
    const s = await bmc({ actions: 405, patch: false });
    const r = await airroot(["node", "media", "attach", "n001", ...auth(s), "--url", ISO]);
    expect(r.code).toBe(1);
    expect(r.err).toContain("insert the image into CD1: PATCH /redfish/v1/Managers/bmc/VirtualMedia/CD1: HTTP 405");
    expect(r.err).toContain("The HTTP method is not allowed on this resource.");
    expect(r.err).toContain("neither a working InsertMedia nor PATCH");
    expect(s.sessions.size).toBe(0); // logged out after the failure too
  });

  test("a BMC that requires If-Match on PATCH (428): the PATCH is repeated once with the resource's ETag", async () => {
    const s = await bmc({ actions: 405, requireIfMatch: true });
    const r = await airroot(["node", "media", "attach", "n001", ...auth(s), "--url", ISO]);
    expect(r.err).toBe("");
    const patches = s.log.filter((l) => l.method === "PATCH");
    expect(patches.length).toBe(4); // media and boot override: each once without, once with If-Match
    expect(s.slots.get("CD1")!.Image).toBe(ISO);
    expect(s.system.Boot.BootSourceOverrideTarget).toBe("Cd");
  });

  test("an asynchronous BMC (InsertMedia 202, the image shows 1.5 s later): attach waits for it, bounded by --wait", async () => {
    const s = await bmc({ insertDelayMs: 1500 });
    const r = await airroot(["node", "media", "attach", "n001", ...auth(s), "--url", ISO]);
    expect(r.err).toBe("");
    expect(r.out).toContain(`inserted ${ISO} (InsertMedia)`);
    expect(s.log.filter((l) => l.method === "GET" && l.path.endsWith("/VirtualMedia/CD1")).length).toBeGreaterThan(2);
    expect(s.system.resets).toEqual(["On"]); // the reset only after the image showed
  });

  test("basic auth only (no SessionService): every request carries basic auth", async () => {
    const s = await bmc({ sessions: false, power: "Off" });
    const r = await airroot(["node", "media", "attach", "n001", ...auth(s), "--url", ISO]);
    expect(r.err).toBe("");
    expect(r.out).toContain("the service root names no session collection: HTTP basic auth as admin");
    expect(s.log.filter((l) => l.path !== "/redfish/v1/").every((l) => l.auth === "basic")).toBe(true);
    expect(s.slots.get("CD1")!.Image).toBe(ISO);
  });

  test("wrong password: the BMC's 401 and its message, one login attempt only, nothing changed", async () => {
    const s = await bmc();
    const bad = join(dir, "wrong-password");
    writeFileSync(bad, "not-it\n", { mode: 0o600 });
    const r = await airroot(["node", "media", "attach", "n001", "--bmc", s.url, "--bmc-ca", s.caFile, "--user", "admin", "--password-file", bad, "--url", ISO]);
    expect(r.code).toBe(1);
    expect(r.err).toContain("log in: POST /redfish/v1/SessionService/Sessions as admin: HTTP 401");
    expect(r.err).toContain("the service received an authorization error: invalid user name or password.");
    expect(r.err).toContain("check --user and the password file");
    expect(s.log.filter((l) => l.method === "POST").length).toBe(1);
    expect(s.slots.get("CD1")!.Image).toBe(null);
  });

  test("wrong password with basic auth only: the 401 of the first authenticated request", async () => {
    const s = await bmc({ sessions: false });
    const r = await airroot(["node", "media", "status", "n001", "--bmc", s.url, "--bmc-ca", s.caFile, "--user", "admin"], { AIRROOT_BMC_PASSWORD: "nope" });
    expect(r.code).toBe(1);
    expect(r.err).toContain("find the system: GET /redfish/v1/Systems: HTTP 401");
    expect(r.err).toContain("There is no valid session established with the implementation.");
    expect(r.err).toContain("check --user and the password");
  });

  test("a slot holding another image: refused without --force (nothing changed), ejected first with --force", async () => {
    const other = "http://10.9.9.9/other.iso";
    const s = await bmc({ slots: [{ id: "CD1", types: ["CD", "DVD"], image: other }] });
    let r = await airroot(["node", "media", "attach", "n001", ...auth(s), "--url", ISO]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`slot CD1 already holds ${other}`);
    expect(r.err).toContain("--force");
    expect(s.slots.get("CD1")!.Image).toBe(other);
    expect(s.system.resets).toEqual([]);
    r = await airroot(["node", "media", "attach", "n001", ...auth(s), "--url", ISO, "--force"]);
    expect(r.err).toBe("");
    expect(r.out).toContain(`ejected ${other} from CD1 (--force; EjectMedia)`);
    expect(s.slots.get("CD1")!.Image).toBe(ISO);
  });

  test("the same image already inserted: not inserted again", async () => {
    const s = await bmc({ slots: [{ id: "CD1", types: ["CD"], image: ISO }], power: "On" });
    const r = await airroot(["node", "media", "attach", "n001", ...auth(s), "--url", ISO]);
    expect(r.code).toBe(0);
    expect(r.out).toContain(`${ISO} already inserted`);
    expect(s.log.some((l) => l.path.endsWith("InsertMedia"))).toBe(false);
    expect(s.system.resets).toEqual(["ForceRestart"]);
  });

  test("only a USB stick slot: the image goes there and the boot override is Usb", async () => {
    const s = await bmc({ slots: [{ id: "RemovableDisk", types: ["USBStick"] }] });
    const r = await airroot(["node", "media", "attach", "n001", ...auth(s), "--url", ISO]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("boot override: Usb once");
    expect(s.slots.get("RemovableDisk")!.Image).toBe(ISO);
  });

  test("media under the ComputerSystem, InsertMedia with an ActionInfo: TransferProtocolType sent as it allows", async () => {
    const s = await bmc({ mediaOnSystem: true, actionInfo: true });
    const url = "https://10.0.2.100/boot/n001.iso";
    const r = await airroot(["node", "media", "attach", "n001", ...auth(s), "--url", url]);
    expect(r.err).toBe("");
    const insert = s.log.find((l) => l.path.endsWith("VirtualMedia.InsertMedia"))!;
    expect(insert.path).toBe("/redfish/v1/Systems/1/VirtualMedia/CD1/Actions/VirtualMedia.InsertMedia");
    expect(insert.body).toEqual({ Image: url, Inserted: true, WriteProtected: true, TransferProtocolType: "HTTPS" });
  });

  test("a BMC that fetches only NFS/CIFS: refused before sending, with what it takes", async () => {
    const s = await bmc({ transferProtocols: ["NFS", "CIFS"] });
    const r = await airroot(["node", "media", "attach", "n001", ...auth(s), "--url", ISO]);
    expect(r.code).toBe(1);
    expect(r.err).toContain("InsertMedia takes TransferProtocolType NFS, CIFS, not HTTP");
    expect(s.log.some((l) => l.path.endsWith("InsertMedia"))).toBe(false);
  });

  test("two systems: --system picks one, without it a clear refusal", async () => {
    const s = await bmc({ systems: 2 });
    let r = await airroot(["node", "media", "attach", "n001", ...auth(s), "--url", ISO]);
    expect(r.code).toBe(1);
    expect(r.err).toContain("the BMC manages 2 systems (1, 2)");
    expect(r.err).toContain("--system ID");
    r = await airroot(["node", "media", "status", "n001", ...auth(s), "--system", "1"]);
    expect(r.code).toBe(0);
  });

  test("--state with the node in the database: the node is printed (and not required)", async () => {
    const state = scratchDir("airroot-bmc-state-");
    const { openDatabase } = await import("../../src/server/store/db");
    const { addNode } = await import("../../src/server/store/nodes");
    const db = await openDatabase(state);
    await addNode(db, { name: "n001", macs: ["52:54:00:12:34:56"], profile: "compute", net: { mode: "dhcp" } as never });
    await db.close();
    const s = await bmc();
    let r = await airroot(["node", "media", "status", "n001", ...auth(s), "--state", state]);
    expect(r.out).toContain("node n001: profile compute, 52:54:00:12:34:56, dhcp");
    r = await airroot(["node", "media", "status", "n002", ...auth(s), "--state", state]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("node n002: not in the node database");
  });
});

describe("detach and status", () => {
  test("status shows the slots, the image, the boot override and the power state; --json too", async () => {
    const s = await bmc({ power: "On" });
    await airroot(["node", "media", "attach", "n001", ...auth(s), "--url", ISO, "--power", "none"]);
    let r = await airroot(["node", "media", "status", "n001", ...auth(s)]);
    expect(r.err).toBe("");
    expect(r.out).toContain("system 1 (/redfish/v1/Systems/1): power On");
    expect(r.out).toContain("boot override: Cd, Once (UEFI)");
    expect(r.out).toContain(`slot CD1 [CD,DVD]: inserted ${ISO} (via URI)`);
    expect(r.out).toContain("slot USB1 [USBStick]: empty");
    r = await airroot(["node", "media", "status", "n001", ...auth(s), "--json"]);
    const j = JSON.parse(r.out);
    expect(j.system).toMatchObject({ id: "1", powerState: "On", bootOverride: { target: "Cd", enabled: "Once" } });
    expect(j.slots[0]).toMatchObject({ id: "CD1", image: ISO, inserted: true, insertAction: true });
    // status changes nothing
    expect(s.log.filter((l) => l.method === "PATCH" || (l.method === "POST" && !l.path.endsWith("/Sessions"))).length).toBe(2);
  });

  test("detach ejects (EjectMedia) and cancels the pending one-time boot to CD", async () => {
    const s = await bmc();
    await airroot(["node", "media", "attach", "n001", ...auth(s), "--url", ISO, "--power", "none"]);
    const r = await airroot(["node", "media", "detach", "n001", ...auth(s)]);
    expect(r.err).toBe("");
    expect(r.out).toContain(`ejected ${ISO} from CD1 (EjectMedia)`);
    expect(r.out).toContain("one-time boot to Cd cancelled");
    expect(s.slots.get("CD1")).toMatchObject({ Image: null, Inserted: false });
    expect(s.system.Boot.BootSourceOverrideEnabled).toBe("Disabled");
    const again = await airroot(["node", "media", "detach", "n001", ...auth(s)]);
    expect(again.out).toContain("nothing to eject");
  });

  test("detach by PATCH when EjectMedia answers 405", async () => {
    const s = await bmc({ actions: 405, slots: [{ id: "CD1", types: ["CD"], image: ISO }] });
    const r = await airroot(["node", "media", "detach", "n001", ...auth(s)]);
    expect(r.err).toBe("");
    expect(r.out).toContain("EjectMedia answered HTTP 405: clearing Image by PATCH instead");
    expect(r.out).toContain(`ejected ${ISO} from CD1 (PATCH)`);
    expect(s.slots.get("CD1")!.Inserted).toBe(false);
  });
});

describe("trust and credentials", () => {
  test("neither --bmc-ca nor --bmc-fingerprint: refused, with the openssl command; nothing sent", async () => {
    const s = await bmc();
    const r = await airroot(["node", "media", "status", "n001", "--bmc", s.url, "--user", "admin", "--password-file", pwFile]);
    expect(r.code).toBe(1);
    expect(r.err).toContain("no way to verify");
    expect(r.err).toContain(`openssl s_client -connect ${s.url.slice(8)} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256`);
    expect(r.err).toContain("verification is never skipped");
    expect(s.log.length).toBe(0);
  });

  test("a pin that does not match: refused before any request, the presented fingerprint shown", async () => {
    const s = await bmc();
    const wrong = "sha256:" + "AB:".repeat(31) + "AB";
    const r = await airroot(["node", "media", "status", "n001", "--bmc", s.url, "--user", "admin", "--password-file", pwFile, "--bmc-fingerprint", wrong]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`the BMC's certificate has fingerprint sha256:${s.fingerprint}, not the pinned`);
    expect(r.err).toContain("nothing was sent");
    expect(s.log.length).toBe(0);
  });

  test("a certificate from another CA: refused before any request", async () => {
    const s = await bmc();
    const other = makeTestPki(join(dir, "other-ca"), undefined, "Other CA");
    const r = await airroot(["node", "media", "status", "n001", "--bmc", s.url, "--user", "admin", "--password-file", pwFile, "--bmc-ca", other.caCert]);
    expect(r.code).toBe(1);
    expect(r.err).toContain("certificate is not trusted");
    expect(r.err).toContain("--bmc-fingerprint");
    expect(s.log.length).toBe(0);
  });

  test("a certificate for another name (CA right, host wrong): refused", async () => {
    const wrongName = makeTestPki(join(dir, "wrong-name"), ["10.99.0.1", "bmc.example"]);
    const s = await bmc({ pki: wrongName });
    const r = await airroot(["node", "media", "status", "n001", "--bmc", s.url, "--user", "admin", "--password-file", pwFile, "--bmc-ca", wrongName.caCert]);
    expect(r.code).toBe(1);
    expect(r.err).toContain("certificate is not trusted");
    expect(s.log.length).toBe(0);
  });

  test("the password from $AIRROOT_BMC_PASSWORD; none at all is refused; a malformed pin is refused", async () => {
    const s = await bmc();
    let r = await airroot(["node", "media", "status", "n001", "--bmc", s.url, "--bmc-ca", s.caFile, "--user", "admin"], { AIRROOT_BMC_PASSWORD: REDFISH_PASSWORD });
    expect(r.code).toBe(0);
    r = await airroot(["node", "media", "status", "n001", "--bmc", s.url, "--bmc-ca", s.caFile, "--user", "admin"]);
    expect(r.code).toBe(1);
    expect(r.err).toContain("no BMC password: give --password-file FILE (one line) or set $AIRROOT_BMC_PASSWORD");
    r = await airroot(["node", "media", "status", "n001", "--bmc", s.url, "--bmc-fingerprint", "sha256:12:34", "--user", "admin", "--password-file", pwFile]);
    expect(r.code).toBe(1);
    expect(r.err).toContain("is not a SHA-256 fingerprint");
    r = await airroot(["node", "media", "attach", "n001", ...auth(s), "--url", "ftp://x/y.iso"]);
    expect(r.err).toContain("the BMC fetches the image over http:// or https://");
  });

  test("--help of each subcommand says what it needs", async () => {
    const a = await airroot(["node", "media", "attach", "--help"]);
    expect(a.out).toContain("an ISO reachable by the BMC over HTTP(S), e.g. one built by `airroot media iso`");
    expect(a.out).toContain("--bmc-fingerprint");
    expect(a.out).toContain("Never on the command line");
    for (const sub of ["detach", "status"]) expect((await airroot(["node", "media", sub, "--help"])).out).toContain("--bmc-ca");
    expect((await airroot(["node", "media", "--help"])).out).toContain("openssl s_client -connect BMC:443");
  });
});
