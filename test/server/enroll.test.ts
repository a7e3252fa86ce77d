// Enrollment rules without the network layer: trusted networks and concurrent enrollments.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { openDatabase } from "../../src/server/store/db.ts";
import { addNode, armNode, certsOf } from "../../src/server/store/nodes.ts";
import { enroll, type EnrollDeps, type EnrollResult } from "../../src/server/enroll.ts";
import { memoryAudit } from "../../src/server/audit.ts";
import { ApiError } from "../../src/server/apierror.ts";
import { createCa, loadCa } from "../../src/pki/x509ca.ts";
import { makeCsr } from "../../src/pki/csr.ts";
import type { HostAddress } from "../../src/server/netaddr.ts";

const MAC = "52:54:00:00:00:01";
let deps: EnrollDeps & { audit: ReturnType<typeof memoryAudit> };
const IFACES: HostAddress[] = [{ iface: "eth0", address: "192.0.2.2", cidr: "192.0.2.2/24", internal: false }];

beforeAll(async () => {
  const db = await openDatabase(scratchDir());
  await addNode(db, { name: "n1", macs: [MAC], profile: "p", net: { mode: "dhcp" } });
  const c = await createCa("node CA");
  deps = { db, nodeCa: await loadCa(c.certPem, c.keyPem), audit: memoryAudit(), nodeCertDays: 1,
    trust: { interfaces: IFACES, subnets: ["10.50.0.0/16"] } };
});
afterAll(async () => { await deps.db.close(); removeScratchDirs(); });

async function attempt(remote: string): Promise<EnrollResult> {
  const { csrPem } = await makeCsr("n1");
  return (await enroll(deps, { macs: [MAC], csr: csrPem }, remote)) as EnrollResult;
}

async function refusal(p: Promise<unknown>): Promise<ApiError> {
  try { await p; } catch (e) { expect(e).toBeInstanceOf(ApiError); return e as ApiError; }
  throw new Error("expected a refusal");
}

test("only trusted source networks may enroll: attached subnet, link-local, configured subnets", async () => {
  await armNode(deps.db, "n1", null);
  for (const remote of ["203.0.113.9", "10.51.0.1", "2001:db8::1", "::ffff:198.51.100.1", "garbage"]) {
    const e = await refusal(attempt(remote));
    expect(e.status).toBe(403);
    expect(e.code).toBe("untrusted-network");
  }
  expect(await certsOf(deps.db, "n1")).toHaveLength(0);
  expect(deps.audit.events.filter((a) => a.outcome === "refused")).toHaveLength(5);
  for (const remote of ["192.0.2.77", "fe80::5054:ff:fe00:1", "169.254.3.4", "10.50.9.9", "::ffff:192.0.2.8"]) {
    await armNode(deps.db, "n1", null);
    expect((await attempt(remote)).node).toBe("n1");
  }
});

test("two concurrent enrollments for one window: exactly one wins", async () => {
  await armNode(deps.db, "n1", null);
  const before = (await certsOf(deps.db, "n1")).length;
  const results = await Promise.allSettled(Array.from({ length: 4 }, () => attempt("192.0.2.77")));
  expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
  for (const r of results) if (r.status === "rejected") expect((r.reason as ApiError).code).toBe("identity-mismatch");
  expect(await certsOf(deps.db, "n1")).toHaveLength(before + 1);
});
