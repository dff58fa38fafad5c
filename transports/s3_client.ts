/**
 * A small S3 client over `fetch` (kept-alive connections, Deno's pool) and
 * core/sigv4.ts: the requests the `s3` transport needs, each bounded and
 * retried.
 *
 * - Every attempt waits at most `s3_request_timeout` seconds for the answer
 *   (a download's body: for each chunk), and every call follows the caller's
 *   `signal` (its deadline), which ends the attempt in flight at once.
 * - A refused or reset connection, a timed-out attempt, a 5xx answer and
 *   429/503 `SlowDown` are retried with backoff (0.2 s doubling, at most
 *   {@link MAX_ATTEMPTS} attempts, never past the caller's deadline); any
 *   other answer is final.
 * - Failures are one line: `cannot <what> s3://bucket/key: <status> <code>
 *   (<message>)` or `... cannot reach <endpoint>: <reason>`. No header, no
 *   signature, no secret is ever part of one.
 *
 * @module
 */

import { errorMessage, WalmgrError } from "../core/errors.ts";
import { log } from "../core/log.ts";
import { EMPTY_SHA256, signRequest, uriEncode } from "../core/sigv4.ts";
import type { S3Settings } from "./s3_config.ts";

/** Attempts of one request (the first and the retries). */
export const MAX_ATTEMPTS = 5;

/** An S3 answer that is an error (status and the XML error code). */
export class S3Error extends WalmgrError {
  constructor(message: string, readonly status: number, readonly code: string) {
    super(message);
    this.name = "S3Error";
  }
}

/** A failure to talk to the endpoint at all (after the retries). */
export class S3UnreachableError extends WalmgrError {
  constructor(message: string, cause?: unknown) {
    super(message, cause === undefined ? {} : { cause });
    this.name = "S3UnreachableError";
  }
}

/** One object as HEAD or a listing shows it. */
export interface S3Object {
  key: string;
  size: number;
  mtimeMs: number;
  etag: string;
  /** `x-amz-meta-sha256` (HEAD/GET only): the SHA-256 recorded when it was written. */
  sha256?: string;
  /** `x-amz-meta-mtime` (HEAD/GET only): the source's modification time (seconds). */
  srcMtime?: number;
}

/** One page of ListObjectsV2. */
export interface S3ListPage {
  objects: S3Object[];
  prefixes: string[];
}

/** Options of one request. */
export interface S3RequestOptions {
  query?: Record<string, string>;
  headers?: Record<string, string>;
  body?: Uint8Array;
  /** Hex SHA-256 of `body` when the caller has it (else computed). */
  payloadHash?: string;
  signal?: AbortSignal | undefined;
  /** Statuses that are answers, not errors (default: 2xx). */
  accept?: number[];
  /** For messages: `write`, `read`, `list`... */
  what: string;
}

const dec = new TextDecoder();

/** Decodes the five XML entities and numeric references. */
export function xmlDecode(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|amp|lt|gt|quot|apos);/g, (_m, e: string) => {
    if (e === "amp") return "&";
    if (e === "lt") return "<";
    if (e === "gt") return ">";
    if (e === "quot") return '"';
    if (e === "apos") return "'";
    const n = e.startsWith("#x") ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
    return String.fromCodePoint(n);
  });
}

/** The text of every `<tag>...</tag>` in `xml` (not nested in itself). */
export function xmlAll(xml: string, tag: string): string[] {
  const out: string[] = [];
  const re = new RegExp(`<${tag}(?:\\s[^>]*)?>([\\s\\S]*?)</${tag}>`, "g");
  for (const m of xml.matchAll(re)) out.push(m[1] as string);
  return out;
}

/** The decoded text of the first `<tag>` in `xml`, or undefined. */
export function xmlOne(xml: string, tag: string): string | undefined {
  const v = xmlAll(xml, tag)[0];
  return v === undefined ? undefined : xmlDecode(v);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

async function sha256Hex(data: Uint8Array): Promise<string> {
  if (data.length === 0) return EMPTY_SHA256;
  const d = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  let out = "";
  for (const b of new Uint8Array(d)) out += b.toString(16).padStart(2, "0");
  return out;
}

/** Why fetch failed, in a few words (Deno's TypeError carries the OS reason). */
function networkReason(err: unknown): string {
  const parts: string[] = [];
  for (let c: unknown = err; c instanceof Error && parts.length < 5; c = c.cause) {
    parts.push(errorMessage(c));
  }
  const m = parts.filter((p) => p !== "fetch failed").pop() ?? parts[0] ?? String(err);
  if (/Connection refused/i.test(m)) return "connection refused";
  if (/Connection reset/i.test(m)) return "connection reset";
  if (/dns|lookup|Name or service not known/i.test(m)) return "host name not resolved";
  if (/certificate|tls|ssl/i.test(m)) return `TLS: ${m.replace(/^.*?: /, "")}`;
  return m.replace(/^error sending request for url \([^)]*\): /, "").replace(
    / \(os error \d+\)/,
    "",
  );
}

/** The S3 client of one bucket. */
export class S3Client {
  readonly bucket: string;
  readonly settings: S3Settings;
  #http: Deno.HttpClient | undefined;

  constructor(bucket: string, settings: S3Settings) {
    this.bucket = bucket;
    this.settings = settings;
  }

  /** `s3://bucket/key`. */
  describe(key: string): string {
    return `s3://${this.bucket}/${key}`;
  }

  /** The URL of `key` (empty: the bucket), with `query`. */
  url(key: string, query: Record<string, string> = {}): URL {
    const ep = this.settings.endpoint;
    const base = ep.pathname.replace(/\/+$/, "");
    const path = `/${uriEncode(key, true)}`;
    let u: URL;
    if (this.settings.uriStyle === "host") {
      u = new URL(`${ep.protocol}//${this.bucket}.${ep.host}${base}${path}`);
    } else {
      u = new URL(`${ep.protocol}//${ep.host}${base}/${uriEncode(this.bucket)}${key ? path : ""}`);
    }
    for (const [k, v] of Object.entries(query)) u.searchParams.set(k, v);
    return u;
  }

  async #client(): Promise<Deno.HttpClient | undefined> {
    if (this.#http || !this.settings.caFile) return this.#http;
    let pem: string;
    try {
      pem = await Deno.readTextFile(this.settings.caFile);
    } catch (err) {
      throw new WalmgrError(`cannot read s3_ca_file ${this.settings.caFile}: ${errorMessage(err)}`);
    }
    this.#http = Deno.createHttpClient({ caCerts: [pem] });
    return this.#http;
  }

  /**
   * One request with retries (see the module documentation); resolves to the
   * response of an accepted status (its body not yet read).
   */
  async request(method: string, key: string, o: S3RequestOptions): Promise<Response> {
    const url = this.url(key, o.query);
    const body = o.body;
    const payloadHash = o.payloadHash ?? (body ? await sha256Hex(body) : EMPTY_SHA256);
    const client = await this.#client();
    const creds = await this.settings.credentials();
    const accept = o.accept ?? [];
    const target = key === "" ? `s3://${this.bucket}` : this.describe(key);
    let delay = 200;
    for (let attempt = 1;; attempt++) {
      if (o.signal?.aborted) throw o.signal.reason;
      const headers = await signRequest({
        method,
        url,
        headers: o.headers ?? {},
        payloadHash,
        region: this.settings.region,
      }, creds);
      const ac = new AbortController();
      const onAbort = () => ac.abort(o.signal?.reason);
      o.signal?.addEventListener("abort", onAbort, { once: true });
      const timeoutS = this.settings.requestTimeoutS;
      const timer = timeoutS > 0
        ? setTimeout(() => ac.abort(new Error("request timeout")), timeoutS * 1000)
        : undefined;
      let retryWhy: string;
      let answered = false;
      try {
        const res = await fetch(url, {
          method,
          headers,
          ...(body ? { body: body as Uint8Array<ArrayBuffer> } : {}),
          signal: ac.signal,
          ...(client ? { client } : {}),
        });
        if ((res.status >= 200 && res.status < 300) || accept.includes(res.status)) {
          answered = true; // the caller's signal still ends the reading of its body
          return res;
        }
        const text = method === "HEAD" ? "" : await res.text().catch(() => "");
        const code = xmlOne(text, "Code") ?? (res.statusText || "error");
        const message = xmlOne(text, "Message");
        const err = new S3Error(
          `cannot ${o.what} ${target}: ${res.status} ${code}${message ? ` (${message})` : ""}` +
            hintFor(res.status, code),
          res.status,
          code,
        );
        if (!(res.status >= 500 || res.status === 429)) throw err;
        retryWhy = err.message;
        if (attempt >= MAX_ATTEMPTS) throw err;
      } catch (err) {
        if (err instanceof S3Error && !(err.status >= 500 || err.status === 429)) throw err;
        if (o.signal?.aborted) throw o.signal.reason;
        if (err instanceof S3Error) {
          if (attempt >= MAX_ATTEMPTS) throw err;
          retryWhy = err.message;
        } else {
          const why = ac.signal.aborted
            ? `no answer within ${timeoutS} s (s3_request_timeout)`
            : networkReason(err);
          retryWhy = `cannot reach ${this.settings.endpoint.origin}: ${why}`;
          if (attempt >= MAX_ATTEMPTS) {
            throw new S3UnreachableError(
              `cannot ${o.what} ${target}: ${retryWhy} (after ${attempt} attempts); check that ` +
                `the object store answers (s3_endpoint)`,
              err,
            );
          }
        }
      } finally {
        clearTimeout(timer);
        if (!answered) o.signal?.removeEventListener("abort", onAbort);
      }
      log.debug(`${method} ${target}: ${retryWhy}; retrying in ${delay} ms`);
      await sleep(delay + Math.floor(Math.random() * delay / 2), o.signal);
      delay = Math.min(delay * 2, 3000);
    }
  }

  /** HEAD of `key`: the object, or null when there is none. */
  async head(key: string, signal?: AbortSignal): Promise<S3Object | null> {
    const res = await this.request("HEAD", key, { signal, accept: [404], what: "stat" });
    await res.body?.cancel();
    if (res.status === 404) return null;
    return objectFromHeaders(key, res.headers);
  }

  /**
   * GET of `key`: the response (body to read), or null when there is none.
   * With `range`, only those bytes (`bytes=0-99`).
   */
  async get(key: string, signal?: AbortSignal, range?: string): Promise<Response | null> {
    const res = await this.request("GET", key, {
      signal,
      accept: [404],
      what: "read",
      ...(range ? { headers: { range } } : {}),
    });
    if (res.status === 404) {
      await res.body?.cancel();
      return null;
    }
    return res;
  }

  /**
   * PUT of `body` as `key`. With `ifNoneMatch`, only when no such object
   * exists; with `ifMatch`, only when the object has that ETag: `ok` false
   * when the condition fails (412, or 409 from a server that reports a
   * concurrent conditional write so). `sha256` is the body's hash: signed
   * (the server checks it) and recorded as `x-amz-meta-sha256`.
   */
  async put(
    key: string,
    body: Uint8Array,
    o: {
      sha256: string;
      ifNoneMatch?: boolean;
      ifMatch?: string;
      meta?: Record<string, string>;
      signal?: AbortSignal | undefined;
    },
  ): Promise<{ ok: boolean; etag: string }> {
    const headers: Record<string, string> = { "x-amz-meta-sha256": o.sha256 };
    for (const [k, v] of Object.entries(o.meta ?? {})) headers[`x-amz-meta-${k}`] = v;
    if (o.ifNoneMatch) headers["if-none-match"] = "*";
    if (o.ifMatch) headers["if-match"] = o.ifMatch;
    const res = await this.request("PUT", key, {
      body,
      payloadHash: o.sha256,
      headers,
      signal: o.signal,
      accept: o.ifNoneMatch || o.ifMatch ? [412, 409] : [],
      what: "write",
    });
    await res.body?.cancel();
    return { ok: res.status < 300, etag: res.headers.get("etag") ?? "" };
  }

  /** DELETE of `key` (missing is fine). */
  async delete(key: string, signal?: AbortSignal): Promise<void> {
    const res = await this.request("DELETE", key, { signal, accept: [404], what: "remove" });
    await res.body?.cancel();
  }

  /** Server-side copy of `from` to `to` (metadata kept). */
  async copy(from: string, to: string, signal?: AbortSignal): Promise<void> {
    const res = await this.request("PUT", to, {
      signal,
      headers: { "x-amz-copy-source": `/${uriEncode(this.bucket)}/${uriEncode(from, true)}` },
      what: `copy ${this.describe(from)} to`,
    });
    // a copy can fail after its 200 (the error is in the body)
    const text = await res.text();
    if (/<Error>/.test(text)) {
      throw new S3Error(
        `cannot copy ${this.describe(from)} to ${this.describe(to)}: ${xmlOne(text, "Code")}`,
        res.status,
        xmlOne(text, "Code") ?? "",
      );
    }
  }

  /**
   * ListObjectsV2 under `prefix` (every page); with `delimiter` `/`, one level
   * (`prefixes` are the sub-"directories"). `maxKeys` stops after that many.
   */
  async list(
    prefix: string,
    o: { delimiter?: string; maxKeys?: number; signal?: AbortSignal | undefined } = {},
  ): Promise<S3ListPage> {
    const out: S3ListPage = { objects: [], prefixes: [] };
    let token: string | undefined;
    for (;;) {
      const query: Record<string, string> = { "list-type": "2", prefix };
      if (o.delimiter) query.delimiter = o.delimiter;
      if (o.maxKeys) query["max-keys"] = String(Math.min(o.maxKeys, 1000));
      if (token) query["continuation-token"] = token;
      const res = await this.request("GET", "", {
        query,
        signal: o.signal,
        what: `list ${this.describe(prefix)} in`,
      });
      const xml = await res.text();
      for (const c of xmlAll(xml, "Contents")) {
        out.objects.push({
          key: xmlOne(c, "Key") ?? "",
          size: Number(xmlOne(c, "Size") ?? 0),
          mtimeMs: Date.parse(xmlOne(c, "LastModified") ?? "") || 0,
          etag: xmlOne(c, "ETag") ?? "",
        });
      }
      for (const c of xmlAll(xml, "CommonPrefixes")) {
        const p = xmlOne(c, "Prefix");
        if (p !== undefined) out.prefixes.push(p);
      }
      if (o.maxKeys && out.objects.length + out.prefixes.length >= o.maxKeys) return out;
      if (xmlOne(xml, "IsTruncated") !== "true") return out;
      token = xmlOne(xml, "NextContinuationToken");
      if (!token) return out;
    }
  }

  /** Starts a multipart upload; returns its id. */
  async createMultipart(
    key: string,
    meta: Record<string, string>,
    signal?: AbortSignal,
  ): Promise<string> {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(meta)) headers[`x-amz-meta-${k}`] = v;
    const res = await this.request("POST", key, {
      query: { uploads: "" },
      headers,
      signal,
      what: "start a multipart upload of",
    });
    const id = xmlOne(await res.text(), "UploadId");
    if (!id) throw new WalmgrError(`cannot write ${this.describe(key)}: no UploadId in the answer`);
    return id;
  }

  /** Uploads part `n` (from 1); returns its ETag. */
  async uploadPart(
    key: string,
    uploadId: string,
    n: number,
    body: Uint8Array,
    signal?: AbortSignal,
  ): Promise<string> {
    const res = await this.request("PUT", key, {
      query: { partNumber: String(n), uploadId },
      body,
      signal,
      what: `write part ${n} of`,
    });
    await res.body?.cancel();
    const etag = res.headers.get("etag");
    if (!etag) throw new WalmgrError(`cannot write ${this.describe(key)}: part ${n} has no ETag`);
    return etag;
  }

  /** Completes a multipart upload of the parts' ETags, in order. */
  async completeMultipart(
    key: string,
    uploadId: string,
    etags: string[],
    signal?: AbortSignal,
  ): Promise<void> {
    const xml = `<CompleteMultipartUpload>${
      etags.map((e, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${e}</ETag></Part>`)
        .join("")
    }</CompleteMultipartUpload>`;
    const res = await this.request("POST", key, {
      query: { uploadId },
      body: new TextEncoder().encode(xml),
      signal,
      what: "complete the multipart upload of",
    });
    const text = await res.text();
    if (/<Error>/.test(text)) {
      throw new S3Error(
        `cannot complete the multipart upload of ${this.describe(key)}: ${xmlOne(text, "Code")}`,
        res.status,
        xmlOne(text, "Code") ?? "",
      );
    }
  }

  /** Abandons a multipart upload (errors only logged). */
  async abortMultipart(key: string, uploadId: string): Promise<void> {
    try {
      const res = await this.request("DELETE", key, {
        query: { uploadId },
        accept: [404],
        what: "abort the multipart upload of",
      });
      await res.body?.cancel();
    } catch (err) {
      log.debug(`aborting the multipart upload of ${this.describe(key)}: ${errorMessage(err)}`);
    }
  }

  /** True when the bucket exists (and these credentials may use it). */
  async bucketExists(signal?: AbortSignal): Promise<boolean> {
    const res = await this.request("HEAD", "", { signal, accept: [404], what: "find bucket" });
    await res.body?.cancel();
    return res.status !== 404;
  }

  /** Creates the bucket (in `s3_region` outside us-east-1). */
  async createBucket(signal?: AbortSignal): Promise<void> {
    const region = this.settings.region;
    const body = region === "us-east-1" ? undefined : new TextEncoder().encode(
      `<CreateBucketConfiguration><LocationConstraint>${region}</LocationConstraint>` +
        `</CreateBucketConfiguration>`,
    );
    const res = await this.request("PUT", "", {
      ...(body ? { body } : {}),
      signal,
      accept: [409],
      what: "create bucket",
    });
    const text = await res.text();
    if (res.status === 409 && !/BucketAlreadyOwnedByYou/.test(text)) {
      throw new S3Error(
        `cannot create bucket s3://${this.bucket}: ${xmlOne(text, "Code")} (the name is taken ` +
          `by another account: choose another bucket name)`,
        409,
        xmlOne(text, "Code") ?? "",
      );
    }
  }

  /** Releases the HTTP client (its kept-alive connections). */
  close(): void {
    this.#http?.close();
    this.#http = undefined;
  }
}

/** What to do about an error status, for the message. */
function hintFor(status: number, code: string): string {
  if (status === 403 || code === "SignatureDoesNotMatch" || code === "InvalidAccessKeyId") {
    return "; check the S3 credentials (s3_credentials_file or AWS_ACCESS_KEY_ID) and s3_region";
  }
  if (code === "NoSuchBucket") return "; run setup to create the bucket";
  if (code === "PermanentRedirect" || code === "AuthorizationHeaderMalformed") {
    return "; check s3_region and s3_endpoint";
  }
  return "";
}

/** An {@link S3Object} from HEAD/GET response headers. */
export function objectFromHeaders(key: string, h: Headers): S3Object {
  const o: S3Object = {
    key,
    size: Number(h.get("content-length") ?? 0),
    mtimeMs: Date.parse(h.get("last-modified") ?? "") || 0,
    etag: h.get("etag") ?? "",
  };
  const sum = h.get("x-amz-meta-sha256");
  if (sum && /^[0-9a-f]{64}$/.test(sum)) o.sha256 = sum;
  const mt = Number(h.get("x-amz-meta-mtime"));
  if (h.has("x-amz-meta-mtime") && Number.isFinite(mt)) o.srcMtime = mt;
  return o;
}

/** Reads a response body whole. */
export async function bodyBytes(res: Response): Promise<Uint8Array> {
  return new Uint8Array(await res.arrayBuffer());
}

export { dec as textDecoder };
