/**
 * Settings of the `s3` transport, read from the ini (keys `s3_*`, see
 * core/config_keys.ts), and its credentials.
 *
 * - `s3_endpoint`: the service URL; default the AWS endpoint of `s3_region`
 *   (`https://s3.<region>.amazonaws.com`).
 * - `s3_region` (default `us-east-1`), `s3_uri_style` (`path` or `host`;
 *   default `host` for AWS, `path` for any other endpoint), `s3_ca_file`
 *   (PEM certificates to trust for https), `s3_parallel` (default 4),
 *   `s3_request_timeout` (seconds one HTTP request may wait for an answer,
 *   default 60), `s3_if_none_match` (default 1: the server honours
 *   `If-None-Match: *`; 0: every archive put is a checked HEAD + compare).
 * - Credentials: `s3_credentials_file` (the AWS shared-credentials format:
 *   section `[default]` or the one `s3_profile` names, keys
 *   `aws_access_key_id`, `aws_secret_access_key`, optional
 *   `aws_session_token`), which must be mode 0600 or stricter; without it
 *   `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` from
 *   the environment. A secret is never put into a message.
 *
 * @module
 */

import { ConfigError } from "../core/errors.ts";
import { expandHome } from "../core/config.ts";
import type { SigV4Credentials } from "../core/sigv4.ts";

/** Everything the S3 client needs but the bucket. */
export interface S3Settings {
  endpoint: URL;
  region: string;
  uriStyle: "path" | "host";
  caFile?: string;
  parallel: number;
  requestTimeoutS: number;
  ifNoneMatch: boolean;
  /** Loaded on first use (an `xarchive -n` never reads them). */
  credentials(): Promise<SigV4Credentials>;
}

/** Default of `s3_parallel`. */
export const DEFAULT_S3_PARALLEL = 4;
/** Default of `s3_request_timeout`. */
export const DEFAULT_S3_REQUEST_TIMEOUT = 60;

function intSetting(
  setting: (k: string) => string | undefined,
  key: string,
  def: number,
  min: number,
  max: number,
): number {
  const raw = setting(key)?.trim();
  if (raw === undefined || raw === "") return def;
  const n = Number(raw);
  if (!/^\d+(\.\d+)?$/.test(raw) || n < min || n > max) {
    throw new ConfigError(
      `${key} must be a number from ${min} to ${max}, got ${JSON.stringify(raw)}`,
    );
  }
  return n;
}

/** Reads the `s3_*` settings (credentials lazily). */
export function s3Settings(setting: (k: string) => string | undefined): S3Settings {
  const region = setting("s3_region")?.trim() || "us-east-1";
  if (!/^[a-z0-9-]+$/.test(region)) {
    throw new ConfigError(`s3_region must look like us-east-1, got ${JSON.stringify(region)}`);
  }
  const rawEndpoint = setting("s3_endpoint")?.trim();
  let endpoint: URL;
  try {
    endpoint = new URL(rawEndpoint || `https://s3.${region}.amazonaws.com`);
  } catch {
    throw new ConfigError(
      `s3_endpoint must be a URL such as https://s3.example.com, got ${
        JSON.stringify(rawEndpoint)
      }`,
    );
  }
  if (endpoint.protocol !== "http:" && endpoint.protocol !== "https:") {
    throw new ConfigError(
      `s3_endpoint must be an http:// or https:// URL, got ${endpoint.protocol}`,
    );
  }
  if (endpoint.username || endpoint.password) {
    throw new ConfigError(
      "s3_endpoint must not carry credentials; use s3_credentials_file or AWS_ACCESS_KEY_ID",
    );
  }
  const style = setting("s3_uri_style")?.trim().toLowerCase();
  if (style && style !== "path" && style !== "host") {
    throw new ConfigError(`s3_uri_style must be path or host, got ${JSON.stringify(style)}`);
  }
  const uriStyle = (style || (rawEndpoint ? "path" : "host")) as "path" | "host";
  const caFile = setting("s3_ca_file")?.trim();
  const ifnm = setting("s3_if_none_match")?.trim().toLowerCase();
  const ifNoneMatch = !(ifnm === "0" || ifnm === "no" || ifnm === "false" || ifnm === "off");
  const credFile = setting("s3_credentials_file")?.trim();
  const profile = setting("s3_profile")?.trim() || "default";
  let loaded: Promise<SigV4Credentials> | undefined;
  return {
    endpoint,
    region,
    uriStyle,
    ...(caFile ? { caFile: expandHome(caFile) } : {}),
    parallel: intSetting(setting, "s3_parallel", DEFAULT_S3_PARALLEL, 1, 64),
    requestTimeoutS: intSetting(
      setting,
      "s3_request_timeout",
      DEFAULT_S3_REQUEST_TIMEOUT,
      0,
      86400,
    ),
    ifNoneMatch,
    credentials() {
      loaded ??= credFile
        ? credentialsFromFile(expandHome(credFile), profile)
        : Promise.resolve(credentialsFromEnv());
      return loaded;
    },
  };
}

/** `AWS_ACCESS_KEY_ID` and friends. */
export function credentialsFromEnv(): SigV4Credentials {
  const id = Deno.env.get("AWS_ACCESS_KEY_ID")?.trim();
  const secret = Deno.env.get("AWS_SECRET_ACCESS_KEY")?.trim();
  const token = Deno.env.get("AWS_SESSION_TOKEN")?.trim();
  if (!id || !secret) {
    throw new ConfigError(
      "no S3 credentials: set s3_credentials_file (mode 0600, [default] with " +
        "aws_access_key_id and aws_secret_access_key) or AWS_ACCESS_KEY_ID and " +
        "AWS_SECRET_ACCESS_KEY in the environment",
    );
  }
  return { accessKeyId: id, secretAccessKey: secret, ...(token ? { sessionToken: token } : {}) };
}

/**
 * The AWS shared-credentials file `path`, section `profile`; refused unless
 * its mode gives nothing to group or others.
 */
export async function credentialsFromFile(
  path: string,
  profile: string,
): Promise<SigV4Credentials> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch (err) {
    throw new ConfigError(
      `s3_credentials_file ${path} cannot be read (${
        err instanceof Deno.errors.NotFound ? "no such file" : "permission denied or unreadable"
      }); create it with mode 0600`,
    );
  }
  if (!st.isFile) throw new ConfigError(`s3_credentials_file ${path} is not a regular file`);
  const mode = (st.mode ?? 0) & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new ConfigError(
      `s3_credentials_file ${path} has mode 0${mode.toString(8)}: it holds a secret, ` +
        `run "chmod 600 ${path}"`,
    );
  }
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    throw new ConfigError(`s3_credentials_file ${path} cannot be read`);
  }
  const section = parseCredentials(text).get(profile);
  if (!section) {
    throw new ConfigError(
      `s3_credentials_file ${path} has no section [${profile}]` +
        (profile === "default" ? "" : " (s3_profile)"),
    );
  }
  const id = section.get("aws_access_key_id");
  const secret = section.get("aws_secret_access_key");
  const token = section.get("aws_session_token");
  if (!id || !secret) {
    throw new ConfigError(
      `s3_credentials_file ${path}: section [${profile}] needs aws_access_key_id and ` +
        `aws_secret_access_key`,
    );
  }
  return { accessKeyId: id, secretAccessKey: secret, ...(token ? { sessionToken: token } : {}) };
}

/** Sections of a shared-credentials file (names lower-cased; `[profile x]` is `x`). */
export function parseCredentials(text: string): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>();
  let current: Map<string, string> | undefined;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const sec = /^\[\s*(?:profile\s+)?([^\]]+?)\s*\]$/.exec(line);
    if (sec) {
      current = new Map();
      out.set(sec[1] as string, current);
      continue;
    }
    const eq = line.indexOf("=");
    if (eq < 0 || !current) continue; // never quote the line: it may hold a secret
    current.set(line.slice(0, eq).trim().toLowerCase(), line.slice(eq + 1).trim());
  }
  return out;
}
