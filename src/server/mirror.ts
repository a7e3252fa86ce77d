// Configurations that make stock nginx, Apache httpd, lighttpd or Caddy serve STATE/images as an image mirror with the
// same URL layout and byte ranges as `airroot serve`, cached as immutable.
//
// Validators across sources: the range engine (src/source) compares the validator (strong ETag, else Last-Modified)
// of every reply with the one it probed, across all sources, and excludes a source that disagrees. So every server
// must send the same strong ETag for an image: "<digest>" (and "<digest>.manifest" for the manifest), as
// `airroot serve` does. Apache does it with mod_headers replacing its own tag and nginx with `etag off` + add_header; both
// then check If-Range against that tag (nginx's add_header ETag sets its internal etag, Apache's byterange filter
// runs after mod_headers), which the mirror tests verify. Caddy replaces file_server's tag with a deferred header and
// drops an If-Range naming the digest (the file at a digest's URL is those bytes), so ranges are served for it.
// lighttpd cannot name the digest without mod_magnet (Lua, not in a stock install), and its own tag or Last-Modified
// would disagree with the others: its config sends no validator, which the engine accepts only with a signed manifest
// (every chunk verified; such a server is compared with the others on size alone: src/source/probe.ts).
// Last-Modified differs between mirrors unless copies keep mtimes (rsync -a does); it is not used when an ETag is
// present. Beyond all that, the signed manifest (size + per-chunk SHA-256) is what proves two sources agree.
import { readdirSync, statSync } from "node:fs";
import { resolve } from "node:path";
import { imagesDir } from "../image/paths";
import { IMMUTABLE_CACHE_CONTROL } from "./static";

export type MirrorServer = "nginx" | "apache" | "lighttpd" | "caddy";
export const MIRROR_SERVERS: MirrorServer[] = ["nginx", "apache", "lighttpd", "caddy"];

export interface MirrorConfigOptions {
  stateDir?: string;      // serves STATE/images ...
  imagesDir?: string;     // ... or this directory (a mirror's rsync'd copy); one of the two is required
  urlPath?: string;       // URL prefix of the images, default "/images/" (what airroot serve uses)
  listen?: string[];      // "443", "192.0.2.1:443", "[2001:db8::1]:443"; default ["443"] (all addresses, v4 and v6)
  cert?: string;          // PEM certificate chain issued by the site CA for this mirror's addresses
  key?: string;
  serverName?: string;    // default "_" (nginx) / the host's name (Apache); lighttpd and Caddy answer any name
}

export const DEFAULT_MIRROR_CERT = "/etc/airroot/mirror.crt";
export const DEFAULT_MIRROR_KEY = "/etc/airroot/mirror.key";

const SAFE_PATH = /^[A-Za-z0-9._~\/+@=-]+$/; // no spaces, quotes, braces, ';', '$', newlines: safe in both syntaxes

interface Listen { host?: string; port: number }

function parseListen(s: string): Listen {
  const m = /^(?:(\[[0-9a-fA-F:.]+\]|[0-9.]+|[A-Za-z0-9.-]+):)?(\d{1,5})$/.exec(s.trim());
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) throw new Error(`mirror-config: invalid --listen "${s}": use PORT, IPV4:PORT or [IPV6]:PORT`);
  return { host: m[1], port };
}

function checkPath(what: string, p: string): string {
  if (!SAFE_PATH.test(p)) throw new Error(`mirror-config: ${what} "${p}" contains characters that are unsafe in a server config; use a plain path`);
  return p;
}

function normalise(o: MirrorConfigOptions) {
  let urlPath = o.urlPath ?? "/images/";
  if (!urlPath.startsWith("/")) urlPath = `/${urlPath}`;
  if (!urlPath.endsWith("/")) urlPath = `${urlPath}/`;
  if (!/^\/([A-Za-z0-9._~-]+\/)*$/.test(urlPath) || /\/\.\.?\//.test(urlPath)) {
    throw new Error(`mirror-config: invalid --root "${o.urlPath}": use a URL path like /images/ or /airroot/images/`);
  }
  if (!o.imagesDir && !o.stateDir) throw new Error("mirror-config: pass --state DIR (serves DIR/images) or --images DIR");
  const dir = checkPath("images directory", resolve(o.imagesDir ?? imagesDir(o.stateDir!)));
  const listens = (o.listen?.length ? o.listen : ["443"]).map(parseListen);
  const cert = checkPath("certificate path", o.cert ?? DEFAULT_MIRROR_CERT);
  const key = checkPath("key path", o.key ?? DEFAULT_MIRROR_KEY);
  if (o.serverName !== undefined && !/^[A-Za-z0-9._*-]+$/.test(o.serverName)) throw new Error(`mirror-config: invalid server name "${o.serverName}"`);
  // Regex for exactly one image or manifest under urlPath; the URL path has only [A-Za-z0-9._~-/], '.' needs escaping.
  const pathRe = `^${urlPath.replace(/\./g, "\\.")}([0-9a-f]{64})\\.(sfs|manifest)$`;
  return { urlPath, dir, fromState: !o.imagesDir, listens, cert, key, pathRe, serverName: o.serverName };
}

const header = (server: string, o: ReturnType<typeof normalise>, install: string[], caching = "immutable caching") => {
  const basePath = o.urlPath.endsWith("/images/") ? o.urlPath.slice(0, -"/images/".length) : undefined;
  const prefix = o.cert.endsWith(".crt") && o.key === o.cert.replace(/\.crt$/, ".key") ? o.cert.replace(/\.crt$/, "") : undefined;
  return [
    `# airroot image mirror for ${server}, generated by \`airroot serve mirror-config\`.`,
    `# Serves ${o.dir}/<sha256>.sfs and .manifest at ${o.urlPath}: GET/HEAD, single byte ranges, ${caching}.`,
    `#`,
    ...install.map((l) => `# ${l}`),
    `#`,
    ...(o.fromState
      ? [`# Images: served straight from the server's state dir (${server} on the airroot server itself). The ${server}`,
        `# user needs read access to ${o.dir}, and the state dir is 0700: a copy made with`,
        `#   rsync -a --delay-updates --delete-after --exclude='.*' STATE/images/ DIR/`,
        `# and \`mirror-config --images DIR\` avoids opening it up.`]
      : [`# Images: keep ${o.dir} a copy of the server's STATE/images (files never change, new ones appear, gc removes`,
        `# old ones; dot files are unfinished packs), e.g. from cron on this mirror:`,
        `#   rsync -a --delay-updates --delete-after --exclude='.*' SERVER:STATE/images/ ${o.dir}/`,
        `# The ${server} user needs read access to it.`]),
    `#`,
    `# TLS: nodes verify mirrors against the site CA, so the certificate must come from \`airroot serve mirror-cert\``,
    `# (run on the server, which holds the CA), issued for the addresses nodes use to reach this mirror:`,
    ...(prefix
      ? [`#   airroot serve mirror-cert --state STATE --address <this mirror's addresses> --out ${prefix}`,
        `# then copy ${o.cert} and ${o.key} (0600) to this mirror.`]
      : [`#   airroot serve mirror-cert --state STATE --address <this mirror's addresses> --out /tmp/mirror`,
        `# then copy /tmp/mirror.crt to ${o.cert} and /tmp/mirror.key to ${o.key} (0600) on this mirror.`]),
    `#`,
    ...(basePath !== undefined
      ? [`# Finally, on the server, list this mirror (nodes then fetch https://<this mirror>${o.urlPath}<sha256>.sfs):`,
        `#   airroot serve config add mirrors https://<this mirror>${basePath} --state STATE`]
      : [`# Note: airroot lists mirrors as base URLs + /images/, so a --root not ending in images/ is not usable by nodes.`]),
  ];
};

export const NGINX_CONF_PATH = "/etc/nginx/conf.d/airroot.conf";
export const APACHE_CONF_PATH = "/etc/apache2/sites-available/airroot.conf"; // Debian; RHEL: /etc/httpd/conf.d/airroot.conf
export const LIGHTTPD_CONF_PATH = "/etc/lighttpd/conf-available/90-airroot.conf"; // Debian: lighty-enable-mod airroot
export const CADDY_CONF_PATH = "/etc/caddy/Caddyfile";

/** Where each server's config goes (for messages and --help). */
export const MIRROR_CONF_PATHS: Record<MirrorServer, string> = {
  nginx: NGINX_CONF_PATH, apache: APACHE_CONF_PATH, lighttpd: LIGHTTPD_CONF_PATH, caddy: CADDY_CONF_PATH,
};

/** A server {} block for nginx's http {} context, to be installed as NGINX_CONF_PATH. */
export function nginxMirrorConfig(opts: MirrorConfigOptions): string {
  const o = normalise(opts);
  const listen = o.listens.flatMap((l) => l.host
    ? [`    listen ${l.host}:${l.port} ssl;`]
    : [`    listen ${l.port} ssl;`, `    listen [::]:${l.port} ssl;`]);
  const loc = (ext: "sfs" | "manifest") => [
    `    location ~ "${o.pathRe.replace("([0-9a-f]{64})", "(?<digest>[0-9a-f]{64})").replace("(sfs|manifest)", ext)}" {`,
    `        alias ${o.dir}/$digest.${ext};`,
    `        limit_except GET { deny all; }  # GET includes HEAD`,
    `        types { }`,
    `        default_type application/octet-stream;`,
    `        gzip off;`,
    `        etag off;                        # nginx's own tag is "<mtime>-<size>"; send the digest instead:`,
    `        add_header ETag "\\"$digest${ext === "sfs" ? "" : ".manifest"}\\"";`,
    `        max_ranges 1;                    # several ranges in one request: whole file, like airroot serve`,
    `        sendfile on;`,
    `        tcp_nopush on;`,
    `        add_header Cache-Control "${IMMUTABLE_CACHE_CONTROL}";  # not on errors: a 404 must not be cached`,
    `        add_header X-Content-Type-Options nosniff;`,
    `    }`,
  ];
  return [
    ...header("nginx", o, [
      `Install: save this as ${NGINX_CONF_PATH} (conf.d/*.conf is read inside http {} on Debian and RHEL),`,
      "then `nginx -t && systemctl reload nginx`.",
    ]),
    `# ETag is the image digest, as airroot serve sends it: nodes compare it across servers, so all must agree.`,
    `server {`,
    ...listen,
    `    server_name ${o.serverName ?? "_"};`,
    `    ssl_certificate ${o.cert};`,
    `    ssl_certificate_key ${o.key};`,
    `    ssl_protocols TLSv1.2 TLSv1.3;`,
    ``,
    `    location / { return 404; }`,
    ...loc("sfs"),
    ...loc("manifest"),
    `}`,
    ``,
  ].join("\n");
}

/** A VirtualHost for Apache httpd 2.4 (needs mod_ssl, mod_headers, mod_setenvif, mod_env, mod_alias; Debian: a2enmod ssl headers). */
export function apacheMirrorConfig(opts: MirrorConfigOptions): string {
  const o = normalise(opts);
  const explicit = o.listens.filter((l) => l.host || l.port !== 443);
  const vhostAddrs = o.listens.map((l) => `${l.host ?? "*"}:${l.port}`).join(" ");
  return [
    ...header("Apache httpd", o, [
      `Install (Debian): save this as ${APACHE_CONF_PATH}, then`,
      "`a2enmod ssl headers && a2ensite airroot && apachectl configtest && systemctl reload apache2`",
      "(port 443 is already in Debian's ports.conf). RHEL: save it as /etc/httpd/conf.d/airroot.conf (needs mod_ssl),",
      "then `apachectl configtest && systemctl reload httpd`.",
    ]),
    ...explicit.map((l) => `Listen ${l.host ? `${l.host}:` : ""}${l.port} https`),
    `<VirtualHost ${vhostAddrs}>`,
    ...(o.serverName ? [`    ServerName ${o.serverName}`] : []),
    `    SSLEngine on`,
    `    SSLCertificateFile ${o.cert}`,
    `    SSLCertificateKeyFile ${o.key}`,
    `    SSLProtocol -all +TLSv1.2 +TLSv1.3`,
    `    TraceEnable off`,
    `    MaxRanges 1`,
    `    AliasMatch "${o.pathRe}" "${o.dir}/$1.$2"`,
    `    <Location "/">`,
    `        Require all denied`,
    `    </Location>`,
    `    <LocationMatch "${o.pathRe}">`,
    `        Require method GET HEAD`,
    `    </LocationMatch>`,
    `    <Directory "${o.dir}">`,
    `        Options None`,
    `        AllowOverride None`,
    `        Require all granted`,
    `        ForceType application/octet-stream`,
    `        SetEnv no-gzip 1`,
    `        # ETag = the image digest, as airroot serve sends (nodes compare it across servers): Apache makes its own`,
    `        # tag and mod_headers replaces it (with FileETag None Apache would drop any ETag). mod_headers runs before`,
    `        # the byterange filter, so If-Range is checked against the digest too.`,
    `        FileETag MTime Size`,
    `        SetEnvIf Request_URI "${o.pathRe.replace("(sfs|manifest)", "sfs")}" AIRROOT_ETAG=$1`,
    `        SetEnvIf Request_URI "${o.pathRe.replace("(sfs|manifest)", "manifest")}" AIRROOT_ETAG=$1.manifest`,
    `        Header set ETag "\\"%{AIRROOT_ETAG}e\\"" env=AIRROOT_ETAG`,
    `        Header set Cache-Control "${IMMUTABLE_CACHE_CONTROL}"`,
    `        Header set X-Content-Type-Options nosniff`,
    `    </Directory>`,
    `</VirtualHost>`,
    ``,
  ].join("\n");
}

/** The note every lighttpd config carries: it sends no validator, so nodes use it only with the signed manifest. */
const LIGHTTPD_VALIDATOR_NOTE = [
  `# No ETag and no Last-Modified: nodes compare the ETag across servers, and lighttpd can send the image digest as its`,
  `# ETag only through mod_magnet (Lua, not in a stock install); its own tag and date would differ from the "<digest>"`,
  `# that airroot serve and the other mirrors send, and get this mirror excluded. With no validator at all, nodes use`,
  `# this mirror only together with the signed manifest (booting nodes always have it; \`airroot mount --manifest\`):`,
  `# every chunk is verified against it and this mirror is compared with the other servers on size alone. Without a`,
  `# manifest it is refused: nothing would prove it serves the same file.`,
];

/**
 * A lighttpd (1.4.56+) include: one $SERVER["socket"] block per --listen address with TLS and the image URLs; every
 * other URL is 403. Needs mod_openssl (Debian: lighttpd-mod-openssl); the other modules are built in.
 */
export function lighttpdMirrorConfig(opts: MirrorConfigOptions): string {
  const o = normalise(opts);
  if (opts.serverName !== undefined) throw new Error("mirror-config: --server-name is for nginx and Apache; lighttpd answers any name on its addresses");
  const sockets = o.listens.flatMap((l) => l.host ? [`${l.host}:${l.port}`] : [`:${l.port}`, `[::]:${l.port}`]);
  const block = (socket: string) => [
    `$SERVER["socket"] == "${socket}" {`,
    `    ssl.engine = "enable"`,
    `    ssl.pemfile = "${o.cert}"`,
    `    ssl.privkey = "${o.key}"`,
    `    ssl.openssl.ssl-conf-cmd = ("MinProtocol" => "TLSv1.2")`,
    `    server.max-keep-alive-idle = 60      # nodes keep connections open between reads`,
    `    $HTTP["url"] =~ "${o.pathRe.replace("([0-9a-f]{64})", "[0-9a-f]{64}")}" {`,
    `        alias.url = ("${o.urlPath}" => "${o.dir}/")`,
    `        $HTTP["request-method"] !~ "^(GET|HEAD)$" { url.access-deny = ("") }`,
    `        mimetype.assign = ("" => "application/octet-stream")`,
    `        static-file.etags = "disable"      # see above: no validator`,
    `        setenv.set-response-header = ("Last-Modified" => "", "X-Content-Type-Options" => "nosniff")`,
    `        expire.url = ("" => "access plus 365 days")  # Cache-Control: max-age=31536000, on 200/206 only`,
    `    }`,
    `    else {`,
    `        url.access-deny = ("")`,
    `    }`,
    `}`,
  ];
  return [
    ...header("lighttpd", o, [
      `Install (Debian: apt install lighttpd lighttpd-mod-openssl): save this as`,
      `${LIGHTTPD_CONF_PATH}, then`,
      "`lighty-enable-mod airroot && lighttpd -tt -f /etc/lighttpd/lighttpd.conf && systemctl restart lighttpd`.",
      "Elsewhere: include it at the end of lighttpd.conf. Several ranges in one request get a multipart reply",
      "(airroot never asks for more than one).",
    ], "a year's caching"),
    ...LIGHTTPD_VALIDATOR_NOTE,
    `# Cache-Control comes from mod_expire, the one way to set it on successful replies only (an error must not be`,
    `# cached): max-age of a year, without "immutable" (mod_setenv would add it to errors too).`,
    `server.modules += ("mod_openssl", "mod_access", "mod_alias", "mod_setenv", "mod_expire")`,
    ...sockets.flatMap(block),
    ``,
  ].join("\n");
}

/**
 * A complete Caddyfile (Caddy 2.6+): no admin endpoint, no automatic HTTPS (so no ACME, no :80 listener), no OCSP
 * fetches, no HTTP/3; the site CA's certificate from files; digest ETags as airroot serve sends them.
 */
export function caddyMirrorConfig(opts: MirrorConfigOptions): string {
  const o = normalise(opts);
  if (opts.serverName !== undefined) throw new Error("mirror-config: --server-name is for nginx and Apache; Caddy answers any name on its addresses");
  // One site per port: `bind` names its addresses (none: all of them, v4 and v6).
  const ports = new Map<number, string[] | "all">();
  for (const l of o.listens) {
    const had = ports.get(l.port);
    ports.set(l.port, !l.host || had === "all" ? "all" : [...(had ?? []), l.host]);
  }
  const handle = (ext: "sfs" | "manifest") => [
    `    @${ext} {`,
    `        method GET HEAD`,
    `        path_regexp ${ext} ${o.pathRe.replace("(sfs|manifest)", ext)}`,
    `    }`,
    `    handle @${ext} {`,
    `        @${ext}File file {`,
    `            root ${o.dir}`,
    `            try_files /{re.${ext}.1}.${ext}`,
    `        }`,
    `        # If-Range naming this digest asks for these very bytes: drop it so the range is served (Caddy would`,
    `        # compare it with its own tag); any other If-Range gets the whole file.`,
    `        @${ext}SameTag expression \`{header.If-Range} == '"' + {re.${ext}.1} + '${ext === "sfs" ? "" : ".manifest"}"'\``,
    `        request_header @${ext}SameTag -If-Range`,
    `        root * ${o.dir}`,
    `        rewrite * /{re.${ext}.1}.${ext}`,
    `        header @${ext}File Content-Type application/octet-stream`,
    `        header @${ext}File X-Content-Type-Options nosniff`,
    `        header @${ext}File Cache-Control "${IMMUTABLE_CACHE_CONTROL}"  # not on errors: a 404 must not be cached`,
    `        header @${ext}File {`,
    `            ETag "\\"{re.${ext}.1}${ext === "sfs" ? "" : ".manifest"}\\""  # replaces file_server's own tag once it has set it`,
    `            defer`,
    `        }`,
    `        file_server`,
    `    }`,
  ];
  return [
    ...header("Caddy", o, [
      `Install: save this as ${CADDY_CONF_PATH} (Caddy reads one Caddyfile, global options first: put other sites after`,
      "this one), let the caddy user read the key (`chgrp caddy KEY && chmod 0640 KEY`), then",
      `\`caddy validate --config ${CADDY_CONF_PATH} && systemctl restart caddy\` (the admin endpoint is off, so`,
      "`systemctl reload caddy` cannot work; new images need no restart). Several ranges in one request get a",
      "multipart reply (airroot never asks for more than one).",
    ]),
    `# ETag is the image digest, as airroot serve sends it: nodes compare it across servers, so all must agree.`,
    `{`,
    `    admin off           # no admin API listening anywhere`,
    `    auto_https off      # no ACME certificates, no HTTP->HTTPS redirect listener on :80`,
    `    ocsp_stapling off   # no OCSP requests to the outside`,
    `    servers {`,
    `        protocols h1 h2 # no HTTP/3 (UDP) listener`,
    `    }`,
    `}`,
    ``,
    `(airroot_images) {`,
    ...handle("sfs"),
    ...handle("manifest"),
    `    handle {`,
    `        respond 404`,
    `    }`,
    `}`,
    ...[...ports].flatMap(([port, hosts]) => [
      ``,
      `https://:${port} {`,
      ...(hosts === "all" ? [] : [`    bind ${hosts.join(" ")}`]),
      `    tls ${o.cert} ${o.key} {`,
      `        protocols tls1.2 tls1.3`,
      `    }`,
      `    import airroot_images`,
      `}`,
    ]),
    ``,
  ].join("\n");
}

/**
 * Checks the images directory a mirror config is for: it must exist (a typo would give a mirror that 404s every
 * image); returns warnings, e.g. when it holds no image yet.
 */
export function checkImagesDir(dir: string): string[] {
  let st;
  try { st = statSync(dir); } catch {
    throw new Error(`mirror-config: images directory ${dir} does not exist; create it and copy the images first: rsync -a STATE/images/ ${dir}/`);
  }
  if (!st.isDirectory()) throw new Error(`mirror-config: ${dir} is not a directory`);
  const images = readdirSync(dir).filter((f) => /^[0-9a-f]{64}\.sfs$/.test(f));
  return images.length ? [] : [`${dir} holds no <sha256>.sfs image yet; copy them with: rsync -a STATE/images/ ${dir}/`];
}

export function mirrorConfig(server: MirrorServer, opts: MirrorConfigOptions): string {
  if (server === "nginx") return nginxMirrorConfig(opts);
  if (server === "apache") return apacheMirrorConfig(opts);
  if (server === "lighttpd") return lighttpdMirrorConfig(opts);
  if (server === "caddy") return caddyMirrorConfig(opts);
  throw new Error(`mirror-config: unknown server "${server}": use ${MIRROR_SERVERS.join(", ")}`);
}
