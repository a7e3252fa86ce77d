// The parsers airroot runs on untrusted input, each with valid seeds: what a server, a node, a mirror, a datagram
// or a kernel command line can send. Used by test/fuzz/fuzz.test.ts (a short run in `make test`) and test/fuzz/run.ts
// (`make fuzz`, 100,000 cases each).
import { generateKeyPairSync, sign } from "node:crypto";
import type { FuzzTarget } from "./harness";
import { findHeadEnd, parseResponseHead, bodyLength, closesAfter, keepAliveMs, ReplyError } from "../../src/source/response";
import { parseContentRange, parseStrongEtag, parseLastModified, validatorOf, HeaderError } from "../../src/source/headers";
import { parseJson, SchemaError } from "../../src/server/schema";
import { enrollRequestSchema } from "../../src/server/enroll";
import { statusRequestSchema } from "../../src/server/selfapi";
import { reportRequestSchema } from "../../src/server/report";
import { decodeDatagram, querySchema, replySchema } from "../../src/server/discoverwire";
import { verifyCsr, makeCsr, CsrError } from "../../src/pki/csr";
import { parsePublicKey } from "../../src/pki/sshkey";
import { SshFormatError } from "../../src/pki/sshwire";
import { loadManifest, signManifest, encodePayload, keyId, ManifestError, MAGIC, SIGNING_CONTEXT, type Manifest } from "../../src/image/manifest";
import { parseCmdline, bootOptions, consoleFromCmdline, CmdlineError } from "../../src/boot/cmdline";
import { BmcError, Redfish, parseReplyJson, redfishMessages } from "../../src/bmc/client";
import { readAction, readActionInfo, readSlot, readSystem } from "../../src/bmc/model";
import { chooseSlot, formatStatus, statusOf } from "../../src/bmc/media";
import { isObj, linkList } from "../../src/bmc/resource";
import { isPrintable } from "../../src/util/printable";

const enc = (s: string) => new TextEncoder().encode(s);
const latin1 = (b: Uint8Array) => Buffer.from(b).toString("latin1");
const utf8 = (b: Uint8Array) => new TextDecoder().decode(b); // lossy on purpose: what a careless reader would do

const HEAD = "HTTP/1.1 206 Partial Content\r\nServer: nginx\r\nDate: Wed, 02 Dec 2026 07:00:00 GMT\r\n" +
  "Content-Type: application/octet-stream\r\nContent-Length: 1048576\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\n" +
  "Connection: keep-alive\r\nKeep-Alive: timeout=5, max=100\r\nETag: \"2b0665248395874177664c1d0c67065ee3a853eeddd78d904cb95d305eac26df\"\r\n" +
  "Cache-Control: public, max-age=31536000, immutable\r\nContent-Range: bytes 1048576-2097151/84377600\r\n\r\n";

const httpReplyHead: FuzzTarget = {
  name: "HTTP reply head",
  seeds: () => [enc(HEAD), enc("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), enc("HTTP/1.0 416 Range Not Satisfiable\r\n\r\n")],
  tokens: ["HTTP/1.1 ", "\r\n\r\n", "Content-Length: ", "Transfer-Encoding: chunked", "Connection: close", "Keep-Alive: timeout=", "Content-Range: bytes "],
  refusals: [ReplyError, HeaderError],
  run(input) {
    const end = findHeadEnd(input, input.length);
    const h = parseResponseHead(end > 0 ? input.subarray(0, end) : input);
    bodyLength(h); closesAfter(h); keepAliveMs(h);
    if (h.headers["content-range"] !== undefined) parseContentRange(h.headers["content-range"]);
    try { validatorOf(h.headers); } catch (e) { if (!(e instanceof HeaderError)) throw e; }
  },
};

const rangeReply: FuzzTarget = {
  name: "range reply (Content-Range, ETag, Last-Modified)",
  seeds: () => [enc("bytes 0-1048575/84377600\n\"2b06\"\nTue, 14 Nov 2023 22:13:20 GMT"), enc("bytes 84377599-84377599/84377600\nW/\"x\"\nMon, 01 Jan 1990 00:00:00 GMT")],
  tokens: ["bytes ", "*/", "-", "/", "W/", "\"", "GMT"],
  refusals: [HeaderError],
  run(input) {
    const [cr, etag, lm] = latin1(input).split("\n");
    parseContentRange(cr);
    parseStrongEtag(etag);
    parseLastModified(lm);
    validatorOf({ etag, "last-modified": lm });
  },
};

async function csrPem(): Promise<string> { return (await makeCsr("n001")).csrPem; }
const enrollmentJson: FuzzTarget = {
  name: "enrollment request JSON",
  async seeds() {
    const csr = await csrPem();
    return [enc(JSON.stringify({ macs: ["52:54:00:12:34:56"], uuid: "0b3e5f0a-1c2d-4e5f-8a9b-0c1d2e3f4a5b", name: "n001", csr })),
      enc(JSON.stringify({ macs: ["52:54:00:12:34:56", "52:54:00:12:34:57"], csr, tpm: { ekPublic: "AAEACwADALIAIIPx", akPublic: "AAEACwAFAHIAAAAQ" } }))];
  },
  tokens: ["\"macs\":", "\"csr\":", "\"tpm\":", "\"__proto__\":", "[", "]", "{", "}"],
  refusals: [SchemaError],
  run(input) { parseJson(utf8(input), enrollRequestSchema); },
};

const csrTarget: FuzzTarget = {
  name: "CSR (PKCS#10, DER mutated inside the PEM)",
  async seeds() {
    const pem = await csrPem();
    return [new Uint8Array(Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ""), "base64"))];
  },
  refusals: [CsrError],
  async run(der) {
    const b64 = Buffer.from(der).toString("base64").match(/.{1,64}/g)?.join("\n") ?? "";
    await verifyCsr(`-----BEGIN CERTIFICATE REQUEST-----\n${b64}\n-----END CERTIFICATE REQUEST-----\n`);
  },
};

function sshLines(): string[] {
  const dir = require("node:fs").mkdtempSync(require("node:path").join(require("node:os").tmpdir(), "airroot-fuzz-ssh-"));
  const out: string[] = [];
  for (const [t, b] of [["ed25519", ""], ["ecdsa", "256"], ["ecdsa", "384"], ["rsa", "2048"]]) {
    const f = `${dir}/k-${t}${b}`;
    Bun.spawnSync(["ssh-keygen", "-q", "-t", t, ...(b ? ["-b", b] : []), "-N", "", "-C", "root@n001", "-f", f]);
    out.push(require("node:fs").readFileSync(`${f}.pub`, "utf8").trim());
  }
  require("node:fs").rmSync(dir, { recursive: true, force: true });
  return out;
}
let sshSeedLines: string[] | undefined;
const sshPublicKey: FuzzTarget = {
  name: "SSH public key (line and key blob)",
  seeds: () => (sshSeedLines ??= sshLines()).flatMap((l) => [enc(l), new Uint8Array([0xb1, ...Buffer.from(l.split(" ")[1], "base64")])]),
  tokens: ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa", "\0\0\0\x0bssh-ed25519", "\0\0\0\0", "\xff\xff\xff\xff", "=="],
  refusals: [SshFormatError],
  run(input) {
    if (input[0] !== 0xb1) { parsePublicKey(utf8(input)); return; }
    // A blob: wrapped in a line whose type is what the blob claims, to reach the blob parser.
    const blob = input.subarray(1);
    const n = blob.length >= 4 ? new DataView(blob.buffer, blob.byteOffset).getUint32(0) : 0;
    const type = n > 0 && n < 64 && blob.length >= 4 + n ? latin1(blob.subarray(4, 4 + n)).replace(/[^A-Za-z0-9@.-]/g, "x") || "x" : "ssh-ed25519";
    parsePublicKey(`${type} ${Buffer.from(blob).toString("base64")} comment`);
  },
};

const imageKey = generateKeyPairSync("ed25519");
const imagePriv = imageKey.privateKey.export({ type: "pkcs8", format: "pem" }).toString();
const imagePub = imageKey.publicKey.export({ type: "spki", format: "pem" }).toString();
const sampleManifest: Manifest = {
  format: 1, digest: "2b0665248395874177664c1d0c67065ee3a853eeddd78d904cb95d305eac26df", size: 600_000, chunkSize: 262_144,
  created: "2026-12-02T07:00:00.000Z", profile: "compute",
  chunks: ["a", "b", "c"].map((c) => c.repeat(64)),
} as Manifest;

const manifestBytes: FuzzTarget = {
  name: "image manifest (signed file)",
  seeds: () => [signManifest(sampleManifest, imagePriv)],
  tokens: ["airroot-manifest", "ed25519 ", "\n"],
  refusals: [ManifestError],
  run(input) { loadManifest(input, imagePub, { expectSize: 600_000 }); },
};

const manifestPayload: FuzzTarget = {
  name: "image manifest (payload, re-signed)",
  seeds: () => [encodePayload(sampleManifest)],
  tokens: ["\"format\":", "\"chunks\":", "\"size\":", "\"chunkSize\":", "1e400", "-0"],
  refusals: [ManifestError],
  run(payload) {
    // Signed with the trusted key: what a signing bug or a stolen key could produce must still be checked strictly.
    const sig = sign(null, Buffer.concat([Buffer.from(SIGNING_CONTEXT), payload]), imageKey.privateKey).toString("base64");
    loadManifest(Buffer.concat([Buffer.from(`${MAGIC}\n`), payload, Buffer.from(`\ned25519 ${sig} ${keyId(imagePub)}\n`)]), imagePub);
  },
};

const discovery: FuzzTarget = {
  name: "discovery datagram (query and reply)",
  seeds: () => [
    enc(JSON.stringify({ airroot: "discover", v: 1, nonce: "0123456789abcdef0123456789abcdef", macs: ["52:54:00:12:34:56"], uuid: "0b3e5f0a-1c2d-4e5f-8a9b-0c1d2e3f4a5b" })),
    enc(JSON.stringify({ airroot: "here", v: 1, nonce: "0123456789abcdef0123456789abcdef", serverId: "a1b2c3", api: ["https://10.0.2.100", "https://[fe80::1]:8443/x"], time: "2026-12-02T07:00:00Z" })),
  ],
  tokens: ["\"airroot\":", "\"api\":", "\"nonce\":", "https://"],
  refusals: [SchemaError],
  run(input) {
    try { decodeDatagram(input, querySchema); } catch (e) { if (!(e instanceof SchemaError)) throw e; }
    decodeDatagram(input, replySchema);
  },
};

const statusText: FuzzTarget = {
  name: "node status report",
  seeds: () => [enc(JSON.stringify({ stage: "failed", detail: "root: no image server answered for 30 s", digest: "2b0665248395874177664c1d0c67065ee3a853eeddd78d904cb95d305eac26df" })),
    enc(JSON.stringify({ stage: "running" }))],
  tokens: ["\"stage\":", "\"detail\":", "\u009b31m", "\u202e", "\x1b[2J"],
  refusals: [SchemaError],
  run(input) { parseJson(utf8(input), statusRequestSchema); },
};

const tokenReport: FuzzTarget = {
  name: "boot reporter's token report",
  seeds: () => [enc(JSON.stringify({ node: "n001", token: "q3Yb0m1d2Vx8Qk9fJc7TtW4eZr6HsP5aLuN0yG1oIxE", stage: "running", detail: "multi-user.target reached 31 s after switch_root" })),
    enc(JSON.stringify({ node: "n001", token: "q3Yb0m1d2Vx8Qk9fJc7TtW4eZr6HsP5aLuN0yG1oIxE", stage: "switched-root" }))],
  tokens: ["\"node\":", "\"token\":", "\"stage\":", "\"detail\":", "\u009b31m", "\u202e"],
  refusals: [SchemaError],
  run(input) { parseJson(utf8(input), reportRequestSchema); },
};

const CMDLINE = "BOOT_IMAGE=/vmlinuz console=tty0 console=ttyS0,115200n8 quiet airroot.server=https://10.0.2.100,https://[fe80::1%25eth0]:8443 " +
  "airroot.ip=eth0:10.0.3.1/16:10.0.0.1 airroot.dhcptimeout=30 airroot.roottimeout=600 airroot.modules=e1000e,ixgbe airroot.blacklist=nouveau " +
  "airroot.overlaysize=4g airroot.imagemethod=copy airroot.imageurl=https://10.0.2.101/images/x.sfs airroot.manifest=https://10.0.2.101/images/x.manifest " +
  "airroot.notpm=warn airroot.rescue=poweroff airroot.skip=console airroot.debugsshd=off e1000e.InterruptThrottleRate=1 \"airroot.init=/sbin/init x\"";
const kernelCmdline: FuzzTarget = {
  name: "kernel command line",
  seeds: () => [enc(CMDLINE), enc("console=ttyS0 airroot.shell airroot.poweroff airroot.debug")],
  tokens: ["airroot.", "=", ",", "\"", "%25", "https://", "[", "]", ":"],
  refusals: [CmdlineError],
  run(input) {
    const c = parseCmdline(utf8(input));
    consoleFromCmdline(c);
    bootOptions(c);
  },
};

const REDFISH_SEEDS = [
  { "@odata.type": "#VirtualMedia.v1_6_0.VirtualMedia", "@odata.id": "/redfish/v1/Managers/bmc/VirtualMedia/CD1", Id: "CD1", Name: "Virtual CD",
    MediaTypes: ["CD", "DVD"], Image: "http://10.0.2.100/boot/n001.iso", ImageName: "n001.iso", Inserted: true, WriteProtected: true, ConnectedVia: "URI",
    TransferProtocolType: "HTTP", Actions: { "#VirtualMedia.InsertMedia": { target: "/redfish/v1/Managers/bmc/VirtualMedia/CD1/Actions/VirtualMedia.InsertMedia",
      "@Redfish.ActionInfo": "/redfish/v1/Managers/bmc/VirtualMedia/CD1/InsertMediaActionInfo", "TransferProtocolType@Redfish.AllowableValues": ["HTTP", "HTTPS"] },
    "#VirtualMedia.EjectMedia": { target: "/redfish/v1/Managers/bmc/VirtualMedia/CD1/Actions/VirtualMedia.EjectMedia" } } },
  { "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "@odata.id": "/redfish/v1/Systems/1", Id: "1", PowerState: "On",
    Boot: { BootSourceOverrideEnabled: "Once", BootSourceOverrideTarget: "Cd", BootSourceOverrideMode: "UEFI", "BootSourceOverrideTarget@Redfish.AllowableValues": ["None", "Pxe", "Cd", "Usb"] },
    Actions: { "#ComputerSystem.Reset": { target: "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset", "ResetType@Redfish.AllowableValues": ["On", "ForceRestart"] } },
    VirtualMedia: { "@odata.id": "/redfish/v1/Systems/1/VirtualMedia" }, Links: { ManagedBy: [{ "@odata.id": "/redfish/v1/Managers/bmc" }] } },
  { "@odata.type": "#VirtualMediaCollection.VirtualMediaCollection", "Members@odata.count": 3, Members: [{ "@odata.id": "/redfish/v1/Managers/bmc/VirtualMedia/CD1" },
    { "@odata.id": "https://10.0.0.1/redfish/v1/Managers/bmc/VirtualMedia/USB1" }, { "@odata.id": "//10.9.9.9/redfish/v1/x" }] },
  { error: { code: "Base.1.16.GeneralError", message: "A general error has occurred.", "@Message.ExtendedInfo": [{ MessageId: "Base.1.16.ResourceInUse",
    Message: "The change to the requested resource failed because the resource is in use or in transition.", Resolution: "Eject the media and resubmit the request." }] } },
  { "@odata.type": "#ActionInfo.v1_3_0.ActionInfo", Parameters: [{ Name: "Image", Required: true, DataType: "String" }, { Name: "TransferProtocolType", AllowableValues: ["HTTP", "NFS"] }] },
];
let fuzzRedfish: Redfish | undefined;
const redfishResource: FuzzTarget = {
  name: "Redfish resources from a BMC (VirtualMedia, ComputerSystem, collections, ActionInfo, error replies)",
  seeds: () => REDFISH_SEEDS.map((o) => enc(JSON.stringify(o))),
  tokens: ["\"@odata.id\":", "\"Members\":", "\"MediaTypes\":", "\"Image\":", "\"Inserted\":", "\"Actions\":", "\"target\":", "@Redfish.AllowableValues",
    "\"@Message.ExtendedInfo\":", "\"Boot\":", "\"PowerState\":", "\"//evil\"", "\"https://10.0.0.1/\"", "\"/redfish/v1/\"", "\\u001b[2J", "\\u009b", "\\u202e"],
  refusals: [BmcError],
  run(input) {
    const rf = (fuzzRedfish ??= new Redfish("https://10.0.0.1", { trust: { fingerprint: "A".repeat(64) } }));
    const body = parseReplyJson(utf8(input), "fuzz", "GET /redfish/v1/x", 200);
    const msgs = redfishMessages(body);
    if (!msgs.every(isPrintable)) throw new Error(`unescaped message: ${JSON.stringify(msgs)}`);
    if (!isObj(body)) return;
    const slot = readSlot("/redfish/v1/Managers/bmc/VirtualMedia/CD1", body);
    const sys = readSystem("/redfish/v1/Systems/1", body);
    readAction(body, "#VirtualMedia.InsertMedia");
    readActionInfo(body);
    const lines = formatStatus(statusOf(sys, [slot]));
    if (!lines.every(isPrintable)) throw new Error(`unescaped status line: ${JSON.stringify(lines)}`);
    if (slot.cls) chooseSlot([slot], "http://10.0.2.100/boot/n001.iso");
    for (const link of [...linkList(body, "Members"), slot.insert?.target, sys.reset?.target, sys.virtualMedia].filter((l) => l !== undefined)) {
      const path = rf.resolve(link, "fuzz");
      if (!path.startsWith("/") || path.startsWith("//")) throw new Error(`resolved off the origin: ${path}`);
    }
  },
};

export const TARGETS: FuzzTarget[] = [httpReplyHead, rangeReply, enrollmentJson, csrTarget, sshPublicKey, manifestBytes, manifestPayload, discovery, statusText, tokenReport, kernelCmdline, redfishResource];
