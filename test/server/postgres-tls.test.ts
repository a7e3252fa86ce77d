// TLS to PostgreSQL: a real server with ssl=on, a certificate from a test CA for 127.0.0.1 only, and pg_hba.conf with
// `hostssl` lines only, so every connection that gets in is encrypted (and a plaintext one is refused). It also
// listens on 127.0.0.2, an address its certificate does not name, for the host-name check. Each sslmode is mapped to
// explicit Bun.SQL options (store/postgres.ts); these cases pin what each one does.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { startPostgres, type TestPostgres } from "../helpers/postgres";
import { makeTestPki, type TestPki } from "../helpers/pki";
import { openDatabase, type Db } from "../../src/server/store/db.ts";
import { parseDbSetting } from "../../src/server/store/dburl.ts";
import { bunTlsOptions } from "../../src/server/store/postgres.ts";
import { addNode, getNode } from "../../src/server/store/nodes.ts";

let pg: TestPostgres, pki: TestPki, otherCa: TestPki;
let dbCount = 0;
beforeAll(async () => {
  const dir = scratchDir("airroot-pgtls-");
  pki = makeTestPki(join(dir, "site"), ["127.0.0.1"]);
  otherCa = makeTestPki(join(dir, "other"), ["127.0.0.1"], "Some Other CA");
  pg = await startPostgres({ ssl: { cert: pki.serverCert, key: pki.serverKey, hostsslOnly: true }, extraListen: ["127.0.0.2"] });
}, 120_000);
afterAll(async () => { await pg?.stop(); removeScratchDirs(); }, 60_000);

/** A fresh database's URL with the given query, optionally by another host address. */
async function dbUrl(query: string, host = "127.0.0.1"): Promise<string> {
  const url = (await pg.createDatabase(`tls${++dbCount}`)).replace("127.0.0.1", host);
  return query ? `${url}?${query}` : url;
}
const open = (url: string) => openDatabase(scratchDir(), { db: url, passwordFile: pg.passwordFile });
async function encrypted(db: Db): Promise<boolean> {
  return (await db.get<{ ssl: boolean }>("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))!.ssl;
}

describe("TLS to PostgreSQL", () => {
  test("verify-full with the CA that signed the server's certificate: the store opens, migrates, keeps nodes", async () => {
    const db = await open(await dbUrl(`sslmode=verify-full&sslrootcert=${pki.caCert}`));
    try {
      expect(await encrypted(db)).toBe(true);
      expect((await db.all("SELECT id FROM schema_applied")).length).toBeGreaterThan(0);
      await addNode(db, { name: "tls1", macs: ["52:54:00:00:30:01"], profile: "p", net: { mode: "dhcp" } });
      expect((await getNode(db, "tls1"))!.macs).toEqual(["52:54:00:00:30:01"]);
    } finally { await db.close(); }
  }, 30_000);

  test("verify-full with a different CA: refused, naming TLS and the certificate", async () => {
    const err = await open(await dbUrl(`sslmode=verify-full&sslrootcert=${otherCa.caCert}`)).then(() => null, (e: Error) => e);
    expect(err).not.toBeNull();
    expect(err!.message).toContain("over TLS (sslmode=verify-full)");
    expect(err!.message).toMatch(/TLS: .*certificate/);
    expect(err!.message).toContain("sslrootcert");
  }, 30_000);

  test("verify-full by an address the certificate does not name: refused; verify-ca (no host check) connects", async () => {
    const err = await open(await dbUrl(`sslmode=verify-full&sslrootcert=${pki.caCert}`, "127.0.0.2")).then(() => null, (e: Error) => e);
    expect(err).not.toBeNull();
    expect(err!.message).toMatch(/TLS: .*(altnames|host)/i);
    expect(err!.message).toContain("ERR_TLS_CERT_ALTNAME_INVALID");
    expect(err!.message).toContain("subjectAltName");
    const db = await open(await dbUrl(`sslmode=verify-ca&sslrootcert=${pki.caCert}`, "127.0.0.2"));
    try { expect(await encrypted(db)).toBe(true); } finally { await db.close(); }
    // verify-ca still checks the chain.
    const other = await open(await dbUrl(`sslmode=verify-ca&sslrootcert=${otherCa.caCert}`, "127.0.0.2")).then(() => null, (e: Error) => e);
    expect(other?.message).toMatch(/TLS: .*certificate/);
  }, 30_000);

  test("require: encrypted without checking the certificate (no CA needed)", async () => {
    const db = await open(await dbUrl("sslmode=require", "127.0.0.2"));
    try { expect(await encrypted(db)).toBe(true); } finally { await db.close(); }
  }, 30_000);

  test("disable, and no sslmode at all, against a hostssl-only server: refused, saying how to turn TLS on", async () => {
    for (const q of ["sslmode=disable", ""]) {
      const err = await open(await dbUrl(q)).then(() => null, (e: Error) => e);
      expect(err).not.toBeNull();
      expect(err!.message).toContain("no encryption");
      expect(err!.message).toContain("hostssl");
      expect(err!.message).toContain("sslmode=verify-full&sslrootcert=CA.pem");
    }
  }, 30_000);

  test("NODE_TLS_REJECT_UNAUTHORIZED=0 does not switch off verify-full's checks", async () => {
    const url = await dbUrl(`sslmode=verify-full&sslrootcert=${otherCa.caCert}`);
    const script = join(scratchDir(), "probe.ts");
    writeFileSync(script, `import { openDatabase } from ${JSON.stringify(join(import.meta.dir, "../../src/server/store/db.ts"))};
try { const db = await openDatabase(process.argv[2], { db: process.argv[3], passwordFile: process.argv[4] }); await db.close(); console.log("CONNECTED"); }
catch (e) { console.log("REFUSED " + e.message); }\n`);
    const p = Bun.spawn([process.execPath, script, scratchDir(), url, pg.passwordFile], {
      env: { ...process.env, NODE_TLS_REJECT_UNAUTHORIZED: "0" }, stdout: "pipe", stderr: "pipe",
    });
    const [out] = await Promise.all([new Response(p.stdout).text(), p.exited]);
    expect(out).toStartWith("REFUSED ");
    expect(out).toMatch(/TLS: .*certificate/);
  }, 30_000);

  test("settings refused before connecting: a bad sslmode, verify-* without a CA file, Bun's own spellings", async () => {
    const base = "postgres://airroot@127.0.0.1:1/airroot";
    expect(() => parseDbSetting(`${base}?sslmode=verify_full`, "--db", true)).toThrow(/--db: .*sslmode=verify_full is not supported; use sslmode=verify-full/);
    expect(() => parseDbSetting(`${base}?sslmode=prefer`, "config db", false)).toThrow(/prefer falls back to an unencrypted connection/);
    expect(() => parseDbSetting(`${base}?sslmode=verify-full`, "config db", false)).toThrow(/sslmode=verify-full needs sslrootcert=FILE/);
    expect(() => parseDbSetting(`${base}?sslmode=verify-full&sslrootcert=system`, "--db", true)).toThrow(/sslrootcert=system is not supported/);
    expect(() => parseDbSetting(`${base}?sslmode=verify-ca&sslrootcert=ca.pem`, "--db", true)).toThrow(/not an absolute path/);
    expect(() => parseDbSetting(`${base}?sslmode=require&sslrootcert=/ca.pem`, "--db", true)).toThrow(/sslrootcert is used only by sslmode=verify-ca or verify-full/);
    expect(() => parseDbSetting(`${base}?sslrootcert=/ca.pem`, "--db", true)).toThrow(/sslrootcert without sslmode/);
    expect(() => parseDbSetting(`${base}?ssl=true`, "--db", true)).toThrow(/ssl= is not supported/);
    expect(() => parseDbSetting(`${base}?SSLMODE=disable`, "--db", true)).toThrow(/write sslmode in lower case/);
    expect(() => parseDbSetting(`${base}?sslmode=require&sslkey=/k.pem`, "--db", true)).toThrow(/client certificate/);
    expect(parseDbSetting(`${base}?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem`, "config db", false)).toEqual({ kind: "postgres", url: `${base}?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem` });
    // Through openDatabase the error comes before any connection (port 1 has no server).
    await expect(openDatabase(scratchDir(), { db: `${base}?sslmode=bogus` })).rejects.toThrow(/--db: .*sslmode=bogus is not supported/);
    // An unreadable CA file is named as such.
    await expect(open(`${base}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem`)).rejects.toThrow(/reading sslrootcert \/nonexistent\/ca.pem/);
  });

  test("each mode's Bun.SQL options are explicit", () => {
    const base = "postgres://airroot@db.example:5433/airroot";
    expect(bunTlsOptions(base)).toEqual({ url: base });
    expect(bunTlsOptions(`${base}?sslmode=disable`)).toEqual({ url: `${base}?sslmode=disable`, mode: "disable", tls: false });
    expect(bunTlsOptions(`${base}?sslmode=require`)).toEqual({ url: `${base}?sslmode=require`, mode: "require", tls: { rejectUnauthorized: false, serverName: "db.example" } });
    const v = bunTlsOptions(`${base}?sslmode=verify-full&sslrootcert=${pki.caCert}&application_name=airroot`);
    expect(v.url).toBe(`${base}?application_name=airroot&sslmode=verify-full`);
    expect(v.tls).toEqual({ ca: expect.stringContaining("-----BEGIN CERTIFICATE-----"), rejectUnauthorized: true, serverName: "db.example" });
  });
});
