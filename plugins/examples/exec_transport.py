#!/usr/bin/env python3
"""A walmgr3 external transport (exec protocol 1) storing files in local directories.

Use it with any walmgr3 binary, compiled or not:

    transport = exec:/path/to/exec_transport.py            (paths as configured)
    transport = exec:/path/to/exec_transport.py --root /srv (everything under /srv)

walmgr3 starts this program once per command, writes one JSON request per line on
its stdin and reads one JSON reply per line from its stdout. File bytes follow a
line that announces their "size", raw. Log lines go to stderr (walmgr3 shows them
with -v and puts the last one in its error messages). The reference is
docs/plugins.md; this file is meant to be copied and adapted (object storage,
a company file service, ...): replace the functions under "storage".

Guarantees walmgr3 relies on, kept here:
- a file appears under its final name complete or not at all: bytes go to a
  hidden temporary name in the same directory, fsync, then link()/rename(), then
  fsync of the directory; only then the reply says "durable": true;
- "identical-ok" never overwrites: an existing file with other bytes is the
  error "exists-different" (link() makes concurrent writers safe);
- every announced byte is read from stdin even when the request fails, so the
  stream stays in step.

Only the Python 3 standard library is used.
"""

import json
import os
import secrets
import shutil
import stat as statmod
import subprocess
import sys

PROTOCOL = 1
NAME = "python-dir"
CAPABILITIES = ["append", "symlink", "run"]
CHUNK = 1 << 20

stdin = sys.stdin.buffer
stdout = sys.stdout.buffer
ROOT = ""


class Failure(Exception):
    """A request that failed; error is the protocol's error code."""

    def __init__(self, error, message):
        super().__init__(message)
        self.error = error
        self.message = message


def log(msg):
    sys.stderr.write(f"{NAME}: {msg}\n")
    sys.stderr.flush()


def reply(obj, body=None):
    stdout.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
    if body is not None:
        body()
    stdout.flush()


def read_exact(n, sink=None):
    """Reads exactly n bytes from stdin, passing chunks to sink (or discarding them)."""
    left = n
    while left > 0:
        chunk = stdin.read(min(CHUNK, left))
        if not chunk:
            raise SystemExit("stdin ended inside a request body")
        if sink is not None:
            sink(chunk)
        left -= len(chunk)


def local(path):
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise Failure("failed", f"path must be absolute: {path!r}")
    return ROOT + path if ROOT else path


def fsync_dir(d):
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def info(name, st):
    return {
        "name": name,
        "size": st.st_size if statmod.S_ISREG(st.st_mode) else 0,
        "mtimeMs": int(st.st_mtime * 1000),
        "isFile": statmod.S_ISREG(st.st_mode),
        "isDirectory": statmod.S_ISDIR(st.st_mode),
        "isSymlink": statmod.S_ISLNK(st.st_mode),
    }


def same_content(a, b):
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(CHUNK)
            y = fb.read(CHUNK)
            if x != y:
                return False
            if not x:
                return True


def temp_name(path):
    d, base = os.path.split(path)
    return os.path.join(d, f".{base}.tmp.{os.getpid()}.{secrets.token_hex(4)}")


# --- storage -------------------------------------------------------------------


def op_stat(req):
    p = local(req["path"])
    try:
        return {"info": info(os.path.basename(p.rstrip("/")) or "/", os.lstat(p))}
    except (FileNotFoundError, NotADirectoryError):
        return {"info": None}


def op_list(req):
    d = local(req["path"])
    try:
        names = os.listdir(d)
    except (FileNotFoundError, NotADirectoryError):
        return {"entries": None}
    entries = []
    for n in names:
        try:
            entries.append(info(n, os.lstat(os.path.join(d, n))))
        except FileNotFoundError:
            pass  # removed meanwhile
    return {"entries": entries}


def op_get(req):
    p = local(req["path"])
    try:
        f = open(p, "rb")
    except FileNotFoundError:
        raise Failure("not-found", f"{req['path']}: no such file")
    except IsADirectoryError:
        raise Failure("failed", f"{req['path']}: is a directory")
    size = os.fstat(f.fileno()).st_size

    def body():
        left = size
        with f:
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:  # shrank meanwhile: pad, the size was promised
                    chunk = b"\0" * min(CHUNK, left)
                stdout.write(chunk)
                left -= len(chunk)

    return {"size": size}, body


def receive(req, path):
    """Reads the request body into a hidden temporary file next to path; returns its name."""
    size = req.get("size", 0)
    d = os.path.dirname(path)
    try:
        os.makedirs(d, 0o700, exist_ok=True)
        tmp = temp_name(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, req.get("mode", 0o600) & 0o777)
    except OSError as e:
        read_exact(size)
        raise Failure("failed", f"{path}: {e.strerror}")
    error = None

    def sink(chunk):
        nonlocal error
        if error is None:
            try:
                f.write(chunk)
            except OSError as e:
                error = e  # keep reading: the stream must stay in step

    try:
        with os.fdopen(fd, "wb") as f:
            read_exact(size, sink)
            if error is None:
                f.flush()
                os.fsync(f.fileno())
    except OSError as e:
        error = error or e
    except BaseException:
        os.unlink(tmp)
        raise
    if error is not None:
        os.unlink(tmp)
        raise Failure("failed", f"{path}: {error.strerror or error}")
    return tmp


def op_put(req):
    path = local(req["path"])
    tmp = receive(req, path)
    try:
        if os.path.lexists(path):
            if not os.path.isfile(path) or os.path.islink(path):
                raise Failure("failed", f"{req['path']}: exists and is not a regular file")
            if same_content(tmp, path):
                return {"outcome": "identical", "durable": True}
            if req.get("policy") != "replace":
                raise Failure("exists-different", f"{req['path']} exists with different contents")
        if req.get("policy") == "replace":
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails when a concurrent writer got there first
            except FileExistsError:
                if same_content(tmp, path):
                    return {"outcome": "identical", "durable": True}
                raise Failure("exists-different", f"{req['path']} exists with different contents")
        fsync_dir(os.path.dirname(path))
        return {"outcome": "stored", "durable": True}
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def op_append(req):
    path = local(req["path"])
    data = bytearray()
    read_exact(req.get("size", 0), data.extend)
    offset, pad_to = req["offset"], req.get("padTo", 0)
    created = not os.path.exists(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if offset == 0:
            os.ftruncate(fd, 0)
        os.pwrite(fd, bytes(data), offset)
        if os.fstat(fd).st_size < pad_to:
            os.ftruncate(fd, pad_to)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(os.path.dirname(path))
    return {"durable": True}


def op_rename(req):
    src, dst = local(req["from"]), local(req["to"])
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        raise Failure("not-found", f"{req['from']}: no such file")
    fsync_dir(os.path.dirname(dst))
    if os.path.dirname(src) != os.path.dirname(dst):
        fsync_dir(os.path.dirname(src))
    return {}


def op_remove(req):
    p = local(req["path"])
    try:
        if os.path.isdir(p) and not os.path.islink(p):
            if req.get("recursive"):
                shutil.rmtree(p)
            else:
                os.rmdir(p)
        else:
            os.unlink(p)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    try:
        fsync_dir(os.path.dirname(p))
    except OSError:
        pass
    return {}


def op_mkdirp(req):
    p = local(req["path"])
    os.makedirs(p, 0o700, exist_ok=True)
    fsync_dir(os.path.dirname(p.rstrip("/")) or "/")
    return {}


def op_symlink(req):
    p = local(req["path"])
    tmp = temp_name(p)
    os.symlink(req["target"], tmp)
    try:
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        os.replace(tmp, p)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    fsync_dir(os.path.dirname(p))
    return {}


def op_run(req):
    data = bytearray()
    read_exact(req.get("size", 0), data.extend)
    try:
        res = subprocess.run(req["argv"], input=bytes(data), capture_output=True)
    except OSError as e:
        raise Failure("failed", f"cannot run {req['argv'][0]}: {e.strerror}")
    return {
        "code": res.returncode if res.returncode >= 0 else 128 - res.returncode,
        "stdout": res.stdout.decode("utf-8", "replace"),
        "stderr": res.stderr.decode("utf-8", "replace"),
    }


OPS = {
    "stat": op_stat,
    "list": op_list,
    "get": op_get,
    "put": op_put,
    "append": op_append,
    "rename": op_rename,
    "remove": op_remove,
    "mkdirp": op_mkdirp,
    "symlink": op_symlink,
    "run": op_run,
}
BODY_OPS = {"put", "append", "run"}  # read their body themselves


# --- protocol loop -------------------------------------------------------------


def main():
    global ROOT
    args = sys.argv[1:]
    if args[:1] == ["--root"] and len(args) == 2:
        ROOT = args[1].rstrip("/")
    elif args:
        sys.exit("usage: exec_transport.py [--root DIR]")
    while True:
        line = stdin.readline()
        if not line:
            return 0
        try:
            req = json.loads(line)
        except ValueError:
            log(f"not a JSON request: {line[:80]!r}")
            return 1
        op, rid = req.get("op"), req.get("id")
        if op == "hello":
            if PROTOCOL not in req.get("protocol", []):
                reply({"id": rid, "ok": False, "error": "unsupported",
                       "message": f"this program speaks exec protocol {PROTOCOL}"})
                return 1
            reply({"id": rid, "ok": True, "protocol": PROTOCOL, "name": NAME,
                   "capabilities": CAPABILITIES})
            continue
        if op == "bye":
            reply({"id": rid, "ok": True})
            return 0
        handler = OPS.get(op)
        try:
            if handler is None:
                read_exact(req.get("size", 0))
                raise Failure("unsupported", f"unknown op {op!r}")
            result = handler(req)
            body = None
            if isinstance(result, tuple):
                result, body = result
            reply({"id": rid, "ok": True, **result}, body)
        except Failure as f:
            reply({"id": rid, "ok": False, "error": f.error, "message": f.message})
        except OSError as e:
            where = req.get("path") or req.get("from") or ""
            reply({"id": rid, "ok": False, "error": "failed",
                   "message": f"{op} {where}: {e.strerror or e}"})


if __name__ == "__main__":
    sys.exit(main())
