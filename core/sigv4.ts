/**
 * AWS Signature Version 4 for S3 requests (header form), with WebCrypto only:
 * no SDK, no module to load, so `xarchive` (one process per WAL segment)
 * pays nothing at start-up for it.
 *
 * {@link signRequest} adds `x-amz-date`, `x-amz-content-sha256`,
 * `x-amz-security-token` (with a session token) and `authorization` to the
 * headers of one request. Every header given is signed (they must reach the
 * server unchanged: do not give ones the HTTP client rewrites, such as
 * `content-length`); `host` is signed from the URL. The payload hash is the
 * caller's (the SHA-256 it computed of the body anyway: S3 then checks the
 * bytes it received against it) or `UNSIGNED-PAYLOAD`.
 *
 * The secret never leaves this module in any form but the signature; the
 * derived signing key is cached per secret, day, region and service.
 *
 * @module
 */

/** Credentials of one request. */
export interface SigV4Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/** What {@link signRequest} signs. */
export interface SigV4Request {
  method: string;
  url: URL;
  /** Lower-case names; values as they will be sent. */
  headers: Record<string, string>;
  /** Hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`. */
  payloadHash: string;
  region: string;
  /** Default `s3`. */
  service?: string;
  /** Default: now. */
  date?: Date;
}

/** SHA-256 of the empty body. */
export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/** The payload hash that signs no body (S3 accepts it on every request). */
export const UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD";

const enc = new TextEncoder();

function hex(buf: ArrayBuffer): string {
  let out = "";
  for (const b of new Uint8Array(buf)) out += b.toString(16).padStart(2, "0");
  return out;
}

async function sha256HexOf(text: string): Promise<string> {
  return hex(await crypto.subtle.digest("SHA-256", enc.encode(text)));
}

async function hmac(key: ArrayBuffer | Uint8Array, data: string): Promise<ArrayBuffer> {
  const k = await crypto.subtle.importKey(
    "raw",
    key as Uint8Array<ArrayBuffer>,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  return await crypto.subtle.sign("HMAC", k, enc.encode(data));
}

/**
 * RFC 3986 percent-encoding as SigV4 wants it: everything but `A-Z a-z 0-9 - _ . ~`
 * (and `/` when `keepSlash`), upper-case hex, UTF-8.
 */
export function uriEncode(text: string, keepSlash = false): string {
  let out = "";
  for (const byte of enc.encode(text)) {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-_.~]/.test(c) || (keepSlash && c === "/")) out += c;
    else out += `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** `YYYYMMDDTHHMMSSZ`. */
export function amzDate(d: Date): string {
  return d.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

/** The canonical query string of `url` (sorted by encoded name, then value). */
export function canonicalQuery(url: URL): string {
  const pairs: Array<[string, string]> = [];
  for (const [k, v] of url.searchParams) pairs.push([uriEncode(k), uriEncode(v)]);
  pairs.sort((
    a,
    b,
  ) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs.map(([k, v]) => `${k}=${v}`).join("&");
}

/**
 * The canonical request (exported for tests). `url.pathname` must already be
 * the encoded path as sent (S3 signs it as is, without encoding it again).
 */
export function canonicalRequest(
  method: string,
  url: URL,
  headers: Record<string, string>,
  payloadHash: string,
): { text: string; signedHeaders: string } {
  const all = new Map<string, string>();
  for (const [k, v] of Object.entries(headers)) all.set(k.toLowerCase(), v);
  all.set("host", url.host);
  const names = [...all.keys()].sort();
  const lines = names.map((n) => `${n}:${(all.get(n) ?? "").trim().replace(/\s+/g, " ")}\n`);
  const signedHeaders = names.join(";");
  const text = [
    method.toUpperCase(),
    url.pathname || "/",
    canonicalQuery(url),
    lines.join(""),
    signedHeaders,
    payloadHash,
  ].join("\n");
  return { text, signedHeaders };
}

const keyCache = new Map<string, Promise<ArrayBuffer>>();

/** The derived signing key of a secret for one day, region and service (cached). */
function signingKey(
  secret: string,
  day: string,
  region: string,
  service: string,
): Promise<ArrayBuffer> {
  const cacheKey = `${day}\u0000${region}\u0000${service}\u0000${secret}`;
  let p = keyCache.get(cacheKey);
  if (!p) {
    p = (async () => {
      const kDate = await hmac(enc.encode(`AWS4${secret}`), day);
      const kRegion = await hmac(kDate, region);
      const kService = await hmac(kRegion, service);
      return await hmac(kService, "aws4_request");
    })();
    if (keyCache.size > 16) keyCache.clear();
    keyCache.set(cacheKey, p);
  }
  return p;
}

/**
 * Signs one request: returns the headers to send (the given ones plus
 * `x-amz-date`, `x-amz-content-sha256`, `x-amz-security-token` when there is a
 * session token, and `authorization`).
 */
export async function signRequest(
  req: SigV4Request,
  creds: SigV4Credentials,
): Promise<Record<string, string>> {
  const service = req.service ?? "s3";
  const stamp = amzDate(req.date ?? new Date());
  const day = stamp.slice(0, 8);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) headers[k.toLowerCase()] = v;
  headers["x-amz-date"] = stamp;
  headers["x-amz-content-sha256"] = req.payloadHash;
  if (creds.sessionToken) headers["x-amz-security-token"] = creds.sessionToken;
  const { text, signedHeaders } = canonicalRequest(req.method, req.url, headers, req.payloadHash);
  const scope = `${day}/${req.region}/${service}/aws4_request`;
  const toSign = `AWS4-HMAC-SHA256\n${stamp}\n${scope}\n${await sha256HexOf(text)}`;
  const key = await signingKey(creds.secretAccessKey, day, req.region, service);
  const signature = hex(await hmac(key, toSign));
  headers["authorization"] = `AWS4-HMAC-SHA256 Credential=${creds.accessKeyId}/${scope}, ` +
    `SignedHeaders=${signedHeaders}, Signature=${signature}`;
  return headers;
}
