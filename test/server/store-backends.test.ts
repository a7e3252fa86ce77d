// The store's records through the one Db interface, the same cases against both backends: the embedded SQLite file
// and a real PostgreSQL (started for this file in a temporary directory, on loopback; see helpers/postgres.ts). On
// PostgreSQL, "two servers" are two connection pools on one database; on SQLite there is one process with one
// connection, so `other` is the same handle.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { startPostgres, type TestPostgres } from "../helpers/postgres";
import { openDatabase, type Db } from "../../src/server/store/db.ts";
import { applyMigrations, registeredMigrations } from "../../src/server/store/migrations.ts";
import {
  addNode, armNode, certsByNode, certsOf, commitEnrollment, countByStage, disarmNode, dropReportToken, forgetTpm, getCert, getNode, getReportToken, isArmed,
  keyUsedBefore, listNodes, nodesByIdentity, NodeStoreError, recordSshCert, removeNode, revokeNode, saveReportToken, savePendingChallenge,
  setStage, sshSerialUsed, takePendingChallenge,
} from "../../src/server/store/nodes.ts";
import {
  addImage, currentImageDigests, getImage, getProfile, imagesBootedSince, listImages, listProfiles, profileHistory, recordBoot,
  removeImage, removeImageIfUnused, setProfile,
} from "../../src/server/store/images.ts";
import { auditRows, dbAudit } from "../../src/server/store/auditlog.ts";
import { forgetServer, healthOf, listServers, markStopped, upsertServer } from "../../src/server/store/servers.ts";
import { startHeartbeat } from "../../src/server/heartbeat.ts";

let pg: TestPostgres;
beforeAll(async () => { pg = await startPostgres(); }, 120_000);
afterAll(async () => { await pg?.stop(); removeScratchDirs(); }, 60_000);

const enrollment = (node: string, serial: string, keyId: string) =>
  ({ node, serial, keyId, notAfter: Date.now() + 86_400_000, fingerprint: `fp-${serial}` });

let dbCount = 0;
const BACKENDS: { name: string; open: () => Promise<{ db: Db; other: Db; close(): Promise<void> }> }[] = [
  { name: "sqlite", open: async () => {
    const db = await openDatabase(scratchDir());
    return { db, other: db, close: () => db.close() };
  } },
  { name: "postgres", open: async () => {
    const url = await pg.createDatabase(`store${++dbCount}`);
    const db = await openDatabase(scratchDir(), { db: url, passwordFile: pg.passwordFile });
    const other = await openDatabase(scratchDir(), { db: url, passwordFile: pg.passwordFile });
    return { db, other, close: async () => { await db.close(); await other.close(); } };
  } },
];

for (const backend of BACKENDS) {
  describe(backend.name, () => {
    let db: Db, other: Db, close: () => Promise<void>;
    beforeAll(async () => { ({ db, other, close } = await backend.open()); }, 60_000);
    afterAll(async () => { await close?.(); });

    test("migrations: every step recorded once; opening again applies nothing", async () => {
      const ids = (await db.all<{ id: string }>("SELECT id FROM schema_applied ORDER BY id")).map((r) => r.id);
      expect(ids).toEqual(registeredMigrations().map((m) => m.id).sort());
      expect(await applyMigrations(other)).toEqual([]);
      expect(db.dialect).toBe(backend.name as "sqlite" | "postgres");
    });

    test("nodes: add, identity lookups, duplicates refused, numbers come back as numbers", async () => {
      await addNode(db, { name: "n1", macs: ["52:54:00:00:20:01", "52:54:00:00:20:02"], uuid: "4c4c4544-0000-1000-8000-000000000001", profile: "p", net: { mode: "dhcp" } }, 1_733_000_000_123);
      await addNode(db, { name: "n2", macs: ["52:54:00:00:20:03"], profile: "p", net: { mode: "static", ip: "10.0.0.2/24", dns: ["10.0.0.1"] } });
      const n1 = (await getNode(other, "n1"))!;
      expect(n1.macs).toEqual(["52:54:00:00:20:01", "52:54:00:00:20:02"]);
      expect(n1.created).toBe(1_733_000_000_123);
      expect(n1.armed).toBe(false);
      expect(n1.armExpires).toBeNull();
      expect((await getNode(db, "n2"))!.net).toEqual({ mode: "static", ip: "10.0.0.2/24", dns: ["10.0.0.1"] });
      expect(await nodesByIdentity(other, ["52:54:00:00:20:02"])).toEqual(["n1"]);
      expect(await nodesByIdentity(db, ["52:54:00:00:20:03"], "4c4c4544-0000-1000-8000-000000000001")).toEqual(["n1", "n2"]);
      await expect(addNode(other, { name: "n1", macs: [], profile: "p", net: { mode: "dhcp" } })).rejects.toThrow(NodeStoreError);
      await expect(addNode(other, { name: "n3", macs: ["52:54:00:00:20:01"], profile: "p", net: { mode: "dhcp" } })).rejects.toThrow(/already belongs to node n1/);
      expect(await getNode(db, "n3")).toBeNull(); // the refused add left nothing behind
      expect((await listNodes(db)).map((n) => n.name)).toEqual(["n1", "n2"]);
    });

    test("the same node added through two servers at once: exactly one add succeeds", async () => {
      const spec = { name: "race", macs: ["52:54:00:00:20:99"], profile: "p", net: { mode: "dhcp" as const } };
      const r = await Promise.allSettled([addNode(db, spec), addNode(other, spec)]);
      expect(r.filter((x) => x.status === "fulfilled")).toHaveLength(1);
      expect((r.find((x) => x.status === "rejected") as PromiseRejectedResult).reason).toBeInstanceOf(NodeStoreError);
      expect(await removeNode(db, "race")).toBe(true);
    });

    test("arming: the window and its expiry", async () => {
      expect(await armNode(db, "n1", 2_000_000_000_000)).toBe(true);
      const n = (await getNode(other, "n1"))!;
      expect(n.armExpires).toBe(2_000_000_000_000);
      expect(isArmed(n, 1_999_999_999_999)).toBe(true);
      expect(isArmed(n, 2_000_000_000_000)).toBe(false);
      expect(await disarmNode(other, "n1")).toBe(true);
      expect((await getNode(db, "n1"))!.armed).toBe(false);
      expect(await armNode(db, "nobody", null)).toBe(false);
    });

    test("concurrent enrollments of one armed node through both servers: exactly one certificate", async () => {
      for (let round = 0; round < 5; round++) {
        await armNode(db, "n1", null);
        const before = (await certsOf(db, "n1")).length;
        const results = await Promise.all(Array.from({ length: 6 }, (_, i) =>
          commitEnrollment(i % 2 ? other : db, enrollment("n1", `R${round}S${i}`, `key-r${round}-${i}`))));
        expect(results.filter((r) => r.ok)).toHaveLength(1);
        for (const r of results) if (!r.ok) expect(r.code).toBe("not-armed");
        const certs = await certsOf(other, "n1");
        expect(certs).toHaveLength(before + 1);
        expect(certs.filter((c) => c.revoked === null)).toHaveLength(1); // the earlier ones were revoked with it
        expect((await getNode(db, "n1"))!.armed).toBe(false);
      }
      expect((await certsByNode(other)).get("n1")).toEqual(await certsOf(db, "n1"));
    });

    test("a replayed key is refused on either server, also when both commit it at once", async () => {
      await armNode(db, "n1", null);
      expect((await commitEnrollment(db, enrollment("n1", "P1", "key-replayed"))).ok).toBe(true);
      expect(await keyUsedBefore(other, "key-replayed")).toBe(true);
      await armNode(other, "n1", null);
      expect(await commitEnrollment(other, enrollment("n1", "P2", "key-replayed"))).toMatchObject({ ok: false, code: "replay" });
      expect((await getNode(db, "n1"))!.armed).toBe(true); // refused in the transaction: the window stays open
      // Two nodes, one key, both servers at once: the key's primary key lets only one through.
      await armNode(db, "n2", null);
      const both = await Promise.all([commitEnrollment(db, enrollment("n1", "P3", "key-shared")), commitEnrollment(other, enrollment("n2", "P4", "key-shared"))]);
      expect(both.filter((r) => r.ok)).toHaveLength(1);
      expect(both.find((r) => !r.ok)).toMatchObject({ ok: false, code: "replay" });
    });

    test("revocation is seen by the other server at once; certificates read back with numbers", async () => {
      await armNode(db, "n2", null);
      const c = await commitEnrollment(db, enrollment("n2", "V1", "key-v1"));
      expect(c.ok).toBe(true);
      const cert = (await getCert(other, "V1"))!;
      expect(cert).toMatchObject({ serial: "V1", node: "n2", revoked: null, fingerprint: "fp-V1" });
      expect(typeof cert.notAfter).toBe("number");
      expect(await revokeNode(db, "n2", 1_800_000_000_000)).toBeGreaterThanOrEqual(1);
      expect((await getCert(other, "V1"))!.revoked).toBe(1_800_000_000_000);
      expect(await revokeNode(other, "n2")).toBe(0);
    });

    test("the TPM endorsement key: recorded by the first TPM enrollment, kept by later ones, forgotten on request", async () => {
      await armNode(db, "n2", null);
      expect((await commitEnrollment(other, { ...enrollment("n2", "E1", "key-e1"), ekPublic: "EK-1" })).ok).toBe(true);
      await armNode(db, "n2", null);
      expect((await commitEnrollment(db, { ...enrollment("n2", "E2", "key-e2"), ekPublic: "EK-2" })).ok).toBe(true);
      expect((await getNode(db, "n2"))!.ekPublic).toBe("EK-1");
      expect(await forgetTpm(other, "n2")).toBe(true);
      expect((await getNode(db, "n2"))!.ekPublic).toBeNull();
    });

    test("a TPM challenge is taken once, whichever server the answers reach", async () => {
      await savePendingChallenge(db, { id: "c".repeat(32), node: "n1", csr: "CSR", ekPublic: "EK", secretSha256: "ab", expires: 2_000_000_000_000 });
      const takes = await Promise.all([takePendingChallenge(db, "c".repeat(32)), takePendingChallenge(other, "c".repeat(32))]);
      const got = takes.filter((t) => t !== null);
      expect(got).toHaveLength(1);
      expect(got[0]).toEqual({ id: "c".repeat(32), node: "n1", csr: "CSR", ekPublic: "EK", secretSha256: "ab", expires: 2_000_000_000_000 });
    });

    test("report tokens: one per node, replaced, dropped only when still the same", async () => {
      await saveReportToken(db, { node: "n1", tokenSha256: "t1", certSerial: "S1", issued: 1, expires: 2_000_000_000_000 });
      await saveReportToken(other, { node: "n1", tokenSha256: "t2", certSerial: "S2", issued: 2, expires: 2_000_000_000_001 });
      expect(await getReportToken(db, "n1")).toEqual({ node: "n1", tokenSha256: "t2", certSerial: "S2", issued: 2, expires: 2_000_000_000_001 });
      expect(await dropReportToken(db, "n1", "t1")).toBe(false);
      expect(await dropReportToken(other, "n1", "t2")).toBe(true);
      expect(await getReportToken(db, "n1")).toBeNull();
    });

    test("SSH serials, stages and the stage counts", async () => {
      await recordSshCert(db, "n1", 18_446_744_073_709_551_615n, "ssh-ed25519", 2_000_000_000_000);
      expect(await sshSerialUsed(other, 18_446_744_073_709_551_615n)).toBe(true);
      expect(await sshSerialUsed(other, 1n)).toBe(false);
      await setStage(db, "n1", "running", "ok", "d".repeat(64), 1_750_000_000_000);
      await setStage(other, "n1", "running", null, null, 1_750_000_000_001); // no digest: the earlier one stays
      const n = (await getNode(db, "n1"))!;
      expect([n.stage, n.stageDetail, n.stageDigest, n.stageAt]).toEqual(["running", null, "d".repeat(64), 1_750_000_000_001]);
      const counts = (await countByStage(other)).sort((a, b) => String(a.stage).localeCompare(String(b.stage)));
      expect(counts).toEqual([{ stage: null, n: 1 }, { stage: "running", n: 1 }]);
    });

    test("images, profiles, boots; gc's conditional removal keeps a current image", async () => {
      const a = "a".repeat(64), b = "b".repeat(64);
      await addImage(db, { digest: a, size: 5_000_000_000, created: 1_700_000_000_000, profile: "p" });
      await addImage(other, { digest: a, size: 1, created: 1, profile: "x" }); // known digest: no-op
      await addImage(db, { digest: b, size: 10, created: 1_700_000_000_001, profile: "p" });
      expect(await getImage(other, a)).toEqual({ digest: a, size: 5_000_000_000, created: 1_700_000_000_000, profile: "p" });
      expect((await listImages(db)).map((i) => i.digest)).toEqual([b, a]);
      await setProfile(db, "p", a, 10);
      await setProfile(other, "p", b, 20);
      expect(await getProfile(db, "p")).toEqual({ name: "p", digest: b, updated: 20 });
      expect(await listProfiles(other)).toEqual([{ name: "p", digest: b, updated: 20 }]);
      expect(await profileHistory(db, "p")).toEqual([{ profile: "p", digest: b, at: 20 }, { profile: "p", digest: a, at: 10 }]);
      expect(await currentImageDigests(other)).toEqual([b]);
      await recordBoot(db, "n1", a, 100);
      await recordBoot(other, "n1", a, 50); // older: the latest boot stays
      expect(await imagesBootedSince(db, 100)).toEqual([a]);
      expect(await imagesBootedSince(db, 101)).toEqual([]);
      expect(await removeImageIfUnused(db, b)).toBe(false);
      expect(await removeImageIfUnused(other, a)).toBe(true);
      expect(await getImage(db, a)).toBeNull();
      await addImage(db, { digest: "e".repeat(64), size: 1, created: 1, profile: "p" });
      await removeImage(other, "e".repeat(64));
      expect(await getImage(db, "e".repeat(64))).toBeNull();
    });

    test("the audit trail: one row per event, from either server, in order", async () => {
      const one = dbAudit(db, "server-a"), two = dbAudit(other, "server-b");
      one.record({ event: "enroll", outcome: "ok", node: "n1", remote: "127.0.0.1", serial: "X" });
      two.record({ event: "mtls", outcome: "refused", node: "n1", reason: "revoked" });
      one.record({ event: "node.revoke", outcome: "ok", node: "n1" });
      await Promise.all([one.flush(), two.flush()]);
      const rows = await auditRows(other);
      // One server's events keep their order; two servers' interleave as they happen.
      expect(rows.filter((r) => r.server === "server-a").map((r) => [r.event, r.outcome, r.node])).toEqual([["enroll", "ok", "n1"], ["node.revoke", "ok", "n1"]]);
      expect(rows.filter((r) => r.server === "server-b").map((r) => [r.event, r.outcome, r.node])).toEqual([["mtls", "refused", "n1"]]);
      expect(rows).toHaveLength(3);
      expect(JSON.parse(rows.find((r) => r.event === "enroll")!.line)).toMatchObject({ event: "enroll", outcome: "ok", server: "server-a", serial: "X" });
      expect(typeof rows[0].at).toBe("number");
    });

    test("servers: each keeps one row, refreshed by its heartbeat; up, stale by age, stopped at a clean shutdown", async () => {
      const row = { host: "h", pid: 1, urls: ["https://10.0.0.1"], version: "v", started: 1_733_000_000_000, seen: 1_733_000_000_000, beat: 1000 };
      await upsertServer(db, { ...row, id: "srv-a" });
      await upsertServer(other, { ...row, id: "srv-b", host: "h2", seen: 1_733_000_005_000 });
      await upsertServer(db, { ...row, id: "srv-a", seen: 1_733_000_010_000 }); // a heartbeat
      const rows = await listServers(other);
      expect(rows.map((r) => [r.id, r.host, r.seen, r.urls])).toEqual([
        ["srv-a", "h", 1_733_000_010_000, ["https://10.0.0.1"]], ["srv-b", "h2", 1_733_000_005_000, ["https://10.0.0.1"]]]);
      expect(healthOf(rows[0], 1_733_000_012_999)).toBe("up");
      expect(healthOf(rows[0], 1_733_000_013_001)).toBe("stale"); // three beats missed
      await markStopped(db, "srv-b", "h2", 99); // not that process's row: untouched
      expect((await listServers(db))[1].stopped).toBeNull();
      await markStopped(db, "srv-b", "h2", 1, 1_733_000_006_000);
      expect(healthOf((await listServers(other))[1])).toBe("stopped");
      expect(await forgetServer(other, "srv-b")).toBe(true);
      expect(await forgetServer(other, "srv-b")).toBe(false);

      const hb = await startHeartbeat({ db, serverId: "srv-c", urls: () => ["https://10.0.0.3"], every: 50 });
      const first = (await listServers(other)).find((r) => r.id === "srv-c")!;
      expect([first.pid, first.beat, first.stopped]).toEqual([process.pid, 50, null]);
      await Bun.sleep(200);
      const later = (await listServers(other)).find((r) => r.id === "srv-c")!;
      expect(later.seen).toBeGreaterThan(first.seen);
      expect(later.started).toBe(first.started);
      await hb.stop();
      expect(healthOf((await listServers(other)).find((r) => r.id === "srv-c")!)).toBe("stopped");
    });

    test("a transaction that throws leaves nothing", async () => {
      await expect(db.transaction(async (tx) => {
        await tx.run("UPDATE nodes SET profile = ? WHERE name = ?", "changed", "n2");
        throw new Error("boom");
      })).rejects.toThrow("boom");
      expect((await getNode(other, "n2"))!.profile).toBe("p");
    });
  });
}
