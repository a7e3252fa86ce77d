// SSH trust from the server: host certificates beside the fresh host keys, sshd told to present them, and the site's
// SSH CA as `@cert-authority` in ssh_known_hosts; for the initramfs's debug sshd and for the booted system alike.
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { SshCertReply } from "../client/api";

/** OpenSSH certificate line prefix for each host key algorithm we generate. */
const CERT_PREFIX: Record<string, string> = {
  "ssh-ed25519": "ssh-ed25519-cert-v01@openssh.com",
  "ssh-rsa": "ssh-rsa-cert-v01@openssh.com",
  "ecdsa-sha2-nistp256": "ecdsa-sha2-nistp256-cert-v01@openssh.com",
  "ecdsa-sha2-nistp384": "ecdsa-sha2-nistp384-cert-v01@openssh.com",
  "ecdsa-sha2-nistp521": "ecdsa-sha2-nistp521-cert-v01@openssh.com",
};

const CERT_LINE = /^[a-z0-9@.-]+-cert-v01@openssh\.com [A-Za-z0-9+/]+={0,2}( [^\n\r]*)?$/;
const PUBKEY_LINE = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,2}( [^\n\r]*)?$/;

/**
 * Writes `<key>-cert.pub` for each host key (private key paths, in the order their public keys were sent to the
 * server: the reply's certificates are in that order). Each certificate must be of its key's algorithm; anything
 * else is refused with the reason, so a confused server cannot make sshd present a wrong certificate.
 * Returns the certificate paths written.
 */
export function writeHostCertificates(hostKeys: string[], reply: SshCertReply): string[] {
  if (!Array.isArray(reply.certificates) || reply.certificates.length !== hostKeys.length)
    throw new Error(`the server sent ${reply.certificates?.length ?? 0} host certificates for ${hostKeys.length} host keys`);
  // All are checked before any is written: a half-certified key set would confuse whoever debugs it.
  const certs = hostKeys.map((key, i) => {
    const alg = readFileSync(`${key}.pub`, "utf8").trim().split(" ")[0];
    const cert = String(reply.certificates[i].certificate ?? "").trim();
    const want = CERT_PREFIX[alg];
    if (!want) throw new Error(`host key ${key}.pub has algorithm ${JSON.stringify(alg.slice(0, 40))}, which has no certificate type`);
    if (!CERT_LINE.test(cert) || !cert.startsWith(`${want} `) || cert.length > 16384)
      throw new Error(`host certificate ${i} from the server is not an ${want} certificate line; not using it`);
    return cert;
  });
  return hostKeys.map((key, i) => {
    writeFileSync(`${key}-cert.pub`, certs[i] + "\n", { mode: 0o644 });
    return `${key}-cert.pub`;
  });
}

/** The `@cert-authority` line that makes ssh trust every host certificate the site's SSH CA signed. */
export function certAuthorityLine(sshCaPublicKey: string): string {
  const k = sshCaPublicKey.trim();
  if (!PUBKEY_LINE.test(k) || k.length > 16384) throw new Error("the server's SSH CA public key is not an OpenSSH public key line");
  return `@cert-authority * ${k}`;
}

/** Adds the CA line to ssh_known_hosts (kept if already there; other lines of the image are preserved). */
export function addKnownHostsCa(file: string, sshCaPublicKey: string): void {
  const line = certAuthorityLine(sshCaPublicKey);
  let text = "";
  try { text = readFileSync(file, "utf8"); } catch {}
  if (text.split("\n").includes(line)) return;
  mkdirSync(join(file, ".."), { recursive: true });
  writeFileSync(file, (text && !text.endsWith("\n") ? text + "\n" : text) + line + "\n", { mode: 0o644 });
}

/** sshd_config lines presenting the given host keys and whichever of their certificates exist. */
export function hostKeyConfigLines(hostKeys: string[], rootForCheck = ""): string[] {
  return [
    ...hostKeys.map((k) => `HostKey ${k}`),
    ...hostKeys.filter((k) => existsSync(`${rootForCheck}${k}-cert.pub`)).map((k) => `HostCertificate ${k}-cert.pub`),
  ];
}

export interface InstallSshOptions {
  /** The new root, e.g. /sysroot. */
  root: string;
  /** Host private key paths in the initramfs (their .pub and -cert.pub are copied too). */
  hostKeys: string[];
  sshCaPublicKey?: string;
}

/**
 * Gives the booted system this boot's host keys and certificates (so port 22 and 2222 present the same, certified
 * identity), and makes its sshd present the certificates: a drop-in in sshd_config.d when the image's sshd_config
 * includes it (Debian 12, RHEL 9), else lines appended to sshd_config. Returns the files written (relative to root).
 */
export function installSshTrust(o: InstallSshOptions): string[] {
  const written: string[] = [];
  const etc = join(o.root, "etc/ssh");
  mkdirSync(etc, { recursive: true, mode: 0o755 });
  const inRoot: string[] = [];
  for (const key of o.hostKeys) {
    const name = key.split("/").pop()!;
    const dest = join(etc, name);
    copyFileSync(key, dest);
    chmodSync(dest, 0o600);
    copyFileSync(`${key}.pub`, `${dest}.pub`);
    chmodSync(`${dest}.pub`, 0o644);
    written.push(`etc/ssh/${name}`, `etc/ssh/${name}.pub`);
    if (existsSync(`${key}-cert.pub`)) {
      copyFileSync(`${key}-cert.pub`, `${dest}-cert.pub`);
      chmodSync(`${dest}-cert.pub`, 0o644);
      written.push(`etc/ssh/${name}-cert.pub`);
    }
    inRoot.push(`/etc/ssh/${name}`);
  }
  const lines = ["# airroot: this boot's host keys and their certificates from the site's SSH CA", ...hostKeyConfigLines(inRoot, o.root), ""];
  const main = join(etc, "sshd_config");
  let mainText = "";
  try { mainText = readFileSync(main, "utf8"); } catch {}
  // sshd takes the first value of most keywords, but HostKey/HostCertificate accumulate: a drop-in included at the top
  // (Debian's layout) adds ours; the image's own HostKey lines only name the same default paths we overwrote.
  if (/^\s*Include\s+\/etc\/ssh\/sshd_config\.d\/\*\.conf\s*$/m.test(mainText)) {
    mkdirSync(join(etc, "sshd_config.d"), { recursive: true, mode: 0o755 });
    writeFileSync(join(etc, "sshd_config.d/50-airroot-hostcert.conf"), lines.join("\n"), { mode: 0o644 });
    written.push("etc/ssh/sshd_config.d/50-airroot-hostcert.conf");
  } else if (mainText && !mainText.includes("# airroot: this boot's host keys")) {
    writeFileSync(main, (mainText.endsWith("\n") ? mainText : mainText + "\n") + lines.join("\n"), { mode: 0o644 });
    written.push("etc/ssh/sshd_config");
  }
  if (o.sshCaPublicKey) {
    addKnownHostsCa(join(etc, "ssh_known_hosts"), o.sshCaPublicKey);
    written.push("etc/ssh/ssh_known_hosts");
  }
  return written;
}

/**
 * systemd's /etc/machine-id for this node: derived from the SMBIOS UUID so it stays the same across boots (journal
 * and DHCP client ids continue), random when the firmware has no usable UUID.
 */
export function machineIdFor(uuid: string | undefined): string {
  if (!uuid) return Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("hex");
  return new Bun.CryptoHasher("sha256").update(`airroot-machine-id:${uuid.toLowerCase()}`).digest("hex").slice(0, 32);
}
