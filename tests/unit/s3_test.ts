/**
 * Pure parts of the s3 transport: the SigV4 signer against AWS's published
 * example, URI encoding and the canonical query, `s3://` locations, the
 * settings and the shared-credentials file (mode, sections, no secret in a
 * message), object keys and the XML of listings.
 */

import { assert, assertEquals, assertMatch, assertThrows } from "../helpers/assert.ts";
import {
  canonicalQuery,
  canonicalRequest,
  EMPTY_SHA256,
  signRequest,
  uriEncode,
} from "../../core/sigv4.ts";
import { hostFor, parseLocation, transportName } from "../../transports/location.ts";
import { credentialsFromFile, parseCredentials, s3Settings } from "../../transports/s3_config.ts";
import { objectKey } from "../../transports/s3.ts";
import { S3Client, xmlAll, xmlDecode, xmlOne } from "../../transports/s3_client.ts";
import { ConfigError } from "../../core/errors.ts";

const AWS_EXAMPLE = {
  accessKeyId: "AKIAIOSFODNN7EXAMPLE",
  secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
};

Deno.test("sigv4: AWS's GET Object example signs to the published signature", async () => {
  const h = await signRequest({
    method: "GET",
    url: new URL("https://examplebucket.s3.amazonaws.com/test.txt"),
    headers: { range: "bytes=0-9" },
    payloadHash: EMPTY_SHA256,
    region: "us-east-1",
    date: new Date(Date.UTC(2013, 4, 24)),
  }, AWS_EXAMPLE);
  assertEquals(
    h.authorization,
    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, " +
      "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, " +
      "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
  );
  assertEquals(h["x-amz-date"], "20130524T000000Z");
  assertEquals(h["x-amz-security-token"], undefined);
});

Deno.test("sigv4: AWS's ListObjects example (query string) signs right", async () => {
  const h = await signRequest({
    method: "GET",
    url: new URL("https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J"),
    headers: {},
    payloadHash: EMPTY_SHA256,
    region: "us-east-1",
    date: new Date(Date.UTC(2013, 4, 24)),
  }, AWS_EXAMPLE);
  assertMatch(
    h.authorization!,
    /Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7$/,
  );
});

Deno.test("sigv4: a session token is signed; the secret is in no header", async () => {
  const h = await signRequest({
    method: "PUT",
    url: new URL("http://127.0.0.1:7480/b/k"),
    headers: { "if-none-match": "*" },
    payloadHash: EMPTY_SHA256,
    region: "us-east-1",
  }, { ...AWS_EXAMPLE, sessionToken: "TOKEN" });
  assertEquals(h["x-amz-security-token"], "TOKEN");
  assertMatch(h.authorization!, /SignedHeaders=host;if-none-match;x-amz-content-sha256;/);
  for (const v of Object.values(h)) assert(!v.includes(AWS_EXAMPLE.secretAccessKey));
});

Deno.test("sigv4: URI encoding and the canonical query", () => {
  assertEquals(uriEncode("a b/c~d*e'(f)!"), "a%20b%2Fc~d%2Ae%27%28f%29%21");
  assertEquals(uriEncode("a b/c", true), "a%20b/c");
  assertEquals(uriEncode("é"), "%C3%A9");
  const u = new URL("https://h/?uploads=&prefix=a%2Fb&list-type=2&delimiter=%2F");
  assertEquals(canonicalQuery(u), "delimiter=%2F&list-type=2&prefix=a%2Fb&uploads=");
  const { text } = canonicalRequest("get", new URL("https://h/k"), { "X-Amz-A": " 1  2 " }, "x");
  assertEquals(text.split("\n").slice(0, 5), ["GET", "/k", "", "host:h", "x-amz-a:1 2"]);
});

Deno.test("s3 locations: s3://BUCKET/PREFIX selects the s3 transport", () => {
  assertEquals(parseLocation("s3://walmgr/a/logs.complete"), {
    scheme: "s3",
    host: "walmgr",
    path: "/a/logs.complete",
  });
  assertEquals(parseLocation("s3://walmgr"), { scheme: "s3", host: "walmgr", path: "/" });
  const loc = parseLocation("s3://walmgr/x");
  assertEquals(transportName(undefined, loc), "s3");
  assertEquals(transportName("s3", loc), "s3");
  assertEquals(hostFor("s3", loc, "slavehost", "completed_wals"), "walmgr");
  assertThrows(() => hostFor("ssh", loc, undefined, "completed_wals"), ConfigError, "transport");
  assertThrows(
    () => hostFor("s3", parseLocation("/var/lib/x"), undefined, "completed_wals"),
    ConfigError,
    "s3://BUCKET/PREFIX",
  );
  // a host named s3 is still a host
  assertEquals(parseLocation("s3:/srv/x"), { host: "s3", path: "/srv/x" });
});

Deno.test("s3 settings: defaults, path style for other endpoints, refusals", () => {
  const of = (v: Record<string, string>) => s3Settings((k) => v[k]);
  const aws = of({});
  assertEquals(aws.endpoint.href, "https://s3.us-east-1.amazonaws.com/");
  assertEquals(aws.uriStyle, "host");
  assertEquals(aws.parallel, 4);
  assertEquals(aws.ifNoneMatch, true);
  const rgw = of({ s3_endpoint: "http://127.0.0.1:7480", s3_region: "default-zone" });
  assertEquals(rgw.uriStyle, "path");
  assertEquals(new S3Client("b", rgw).url("a b/c").href, "http://127.0.0.1:7480/b/a%20b/c");
  assertEquals(new S3Client("b", aws).url("k").href, "https://b.s3.us-east-1.amazonaws.com/k");
  assertEquals(of({ s3_if_none_match: "0" }).ifNoneMatch, false);
  assertThrows(() => of({ s3_endpoint: "ftp://x" }), ConfigError, "http");
  assertThrows(() => of({ s3_endpoint: "https://k:s@x" }), ConfigError, "must not carry");
  assertThrows(() => of({ s3_uri_style: "virtual" }), ConfigError, "path or host");
  assertThrows(() => of({ s3_parallel: "0" }), ConfigError, "s3_parallel");
});

Deno.test("s3 credentials: file sections, mode 0600 required, no secret in messages", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/credentials`;
    const secret = "very-secret-value";
    await Deno.writeTextFile(
      file,
      `# comment\n[default]\naws_access_key_id = AK1\naws_secret_access_key = ${secret}\n` +
        `[profile other]\naws_access_key_id=AK2\naws_secret_access_key=S2\naws_session_token=T\n`,
    );
    await Deno.chmod(file, 0o640);
    const err = await credentialsFromFile(file, "default").catch((e) => e);
    assert(err instanceof ConfigError);
    assertMatch(err.message, /mode 0640: it holds a secret, run "chmod 600/);
    await Deno.chmod(file, 0o600);
    assertEquals(await credentialsFromFile(file, "default"), {
      accessKeyId: "AK1",
      secretAccessKey: secret,
    });
    assertEquals((await credentialsFromFile(file, "other")).sessionToken, "T");
    const missing = await credentialsFromFile(file, "nope").catch((e) => e);
    assertMatch(missing.message, /no section \[nope\] \(s3_profile\)/);
    await Deno.writeTextFile(file, `[default]\naws_access_key_id = AK1\n${secret}\n`);
    const bad = await credentialsFromFile(file, "default").catch((e) => e);
    assert(!bad.message.includes(secret), bad.message);
    assertEquals(parseCredentials("[a]\nx = 1\n").get("a")?.get("x"), "1");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("s3: object keys and listing XML", () => {
  assertEquals(objectKey("/a//b/"), "a/b");
  assertEquals(objectKey("/"), "");
  assertEquals(objectKey("a/./b/../c"), "a/c");
  assertEquals(xmlDecode("a&amp;b&lt;&#65;&#x42;"), "a&b<AB");
  const xml = "<R><Contents><Key>a&amp;b</Key><Size>3</Size></Contents>" +
    "<Contents><Key>c</Key></Contents><IsTruncated>false</IsTruncated></R>";
  assertEquals(xmlAll(xml, "Contents").length, 2);
  assertEquals(xmlOne(xml, "Key"), "a&b");
  assertEquals(xmlOne(xml, "Nope"), undefined);
});
