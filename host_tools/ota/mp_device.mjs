// A MicroPython device on a pipe: the WebAssembly port of MicroPython under Node, running one
// program whose byte link is this process's stdin (in) and stdout (out).
//
// host_tools/ota/mp_device.py starts this script with the path of a JSON job:
//   { "micropython": "<micropython.mjs>", "heapsize": 1048576, "pystack": 4096,
//     "files": {"<vm path>": "<base64>"}, "flash": "<host folder>", "code": "<python source>",
//     "stop": "<path>" (optional: the link ends once this file exists, for a pseudo-terminal) }
// The program reads the link with `_mfpipe.read(n)` (hex of up to n bytes; blocks until some
// arrive; "" at end of input) and writes it with `_mfpipe.write(hex)`. Its print() output goes
// to stderr, so stdout carries nothing but the link. The host folder `flash` is copied to
// /flash (the working directory) before the run and mirrored back after it, even when the
// program raised: a device's flash keeps what was written when it stops.
//
// Exit status: 0 when the program ended, 1 when it raised, 2 when this helper failed.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const pause = new Int32Array(new SharedArrayBuffer(4));

function copyIn(FS, hostDir, vmDir) {
    FS.mkdirTree(vmDir);
    if (!fs.existsSync(hostDir)) return;
    for (const entry of fs.readdirSync(hostDir, { withFileTypes: true })) {
        const host = path.join(hostDir, entry.name);
        const vm = `${vmDir}/${entry.name}`;
        if (entry.isDirectory()) copyIn(FS, host, vm);
        else if (entry.isFile()) FS.writeFile(vm, fs.readFileSync(host));
    }
}

function mirrorOut(FS, vmDir, hostDir) {
    fs.mkdirSync(hostDir, { recursive: true });
    const seen = new Set();
    for (const name of FS.readdir(vmDir)) {
        if (name === "." || name === "..") continue;
        seen.add(name);
        const vm = `${vmDir}/${name}`;
        const host = path.join(hostDir, name);
        if (FS.isDir(FS.stat(vm).mode)) {
            if (fs.existsSync(host) && !fs.statSync(host).isDirectory()) fs.rmSync(host, { force: true });
            mirrorOut(FS, vm, host);
        } else {
            if (fs.existsSync(host) && fs.statSync(host).isDirectory()) fs.rmSync(host, { recursive: true, force: true });
            fs.writeFileSync(host, FS.readFile(vm));
        }
    }
    for (const name of fs.readdirSync(hostDir)) {
        if (!seen.has(name)) fs.rmSync(path.join(hostDir, name), { recursive: true, force: true });
    }
}

let stopFile = null;

function readLink(max) {
    const buf = Buffer.alloc(Math.max(1, Math.min(Number(max) || 1, 65536)));
    for (let spins = 0; ; spins++) {
        try {
            const n = fs.readSync(0, buf, 0, buf.length, null);
            return buf.subarray(0, n).toString("hex");
        } catch (err) {
            if (err.code === "EAGAIN") {
                // A pseudo-terminal never ends: the host asks the program to stop with a file.
                if (stopFile && spins % 25 === 0 && fs.existsSync(stopFile)) return "";
                Atomics.wait(pause, 0, 0, 2);
                continue;
            }
            if (err.code === "EIO") return "";
            if (err.code === "EOF") return "";
            throw err;
        }
    }
}

function writeLink(hex) {
    let data = Buffer.from(String(hex), "hex");
    while (data.length) {
        try {
            data = data.subarray(fs.writeSync(1, data));
        } catch (err) {
            if (err.code !== "EAGAIN") throw err;
            Atomics.wait(pause, 0, 0, 2);
        }
    }
    return 0;
}

async function main() {
    let job;
    try {
        job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
    } catch (err) {
        process.stderr.write(`mp_device: cannot read the job: ${err.message}\n`);
        return 2;
    }
    let loadMicroPython;
    try {
        ({ loadMicroPython } = await import(pathToFileURL(job.micropython).href));
    } catch (err) {
        process.stderr.write(`mp_device: cannot load MicroPython from ${job.micropython}: ${err.message}\n`);
        return 2;
    }
    const log = (bytes) => process.stderr.write(Buffer.from(bytes));
    const mp = await loadMicroPython({
        heapsize: job.heapsize || 1024 * 1024, pystack: job.pystack || 4096, linebuffer: false,
        stdout: log, stderr: log,
    });
    const FS = mp.FS;
    stopFile = job.stop || null;
    for (const [vmPath, b64] of Object.entries(job.files || {})) {
        FS.mkdirTree(path.posix.dirname(vmPath));
        FS.writeFile(vmPath, Buffer.from(b64, "base64"));
    }
    if (job.flash) copyIn(FS, job.flash, "/flash");
    else FS.mkdirTree("/flash");
    FS.chdir("/flash");
    mp.registerJsModule("_mfpipe", { read: readLink, write: writeLink });
    let status = 0;
    try {
        mp.runPython("import sys\nsys.path.append('/lib')\n" + job.code);
    } catch (exc) {
        process.stderr.write(`${exc && exc.message ? exc.message : exc}\n`);
        status = 1;
    }
    if (job.flash) mirrorOut(FS, "/flash", job.flash);
    return status;
}

main().then((code) => process.exit(code), (err) => {
    process.stderr.write(`mp_device: ${err && err.stack ? err.stack : err}\n`);
    process.exit(2);
});
