// Runs one piece of MicroPython code in the WebAssembly port of MicroPython, under Node.
//
// host_tools/micropython_wasm.py starts this script and writes one JSON job to its stdin:
//   {
//     "micropython": "<path of micropython.mjs>",
//     "heapsize": 1048576, "pystack": 4096,
//     "trees": [{"host": "<folder>", "vm": "/lib", "writeback": false}, ...],
//     "files": {"<vm path>": "<base64>"},
//     "cwd": "/flash",
//     "chunks": ["<python source>", ...]
//   }
// The chunks run one after the other in the same VM, each by its own runPython call, and the
// run stops at the first one that raises. This port's garbage collector only frees memory
// between two runPython calls (inside one, the heap just grows), so long runs such as a test
// module are best split into chunks, one per test.
// MicroPython's stdout and stderr are passed through as raw bytes. The port has no NODEFS,
// so each host folder is copied into the in-memory filesystem before the run, and a folder
// marked "writeback" (the board's flash) is mirrored back to the host afterwards, even when
// the code raised: a crash must not lose what the runtime had written.
//
// Exit status: 0 when the code ran to the end (or called sys.exit(0)), 1 when it raised,
// 2 when this helper itself failed (bad job, missing package).
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

function readJob() {
    const raw = fs.readFileSync(0, "utf8");
    return JSON.parse(raw);
}

// Buffered byte sink: one write per line or per 4 KiB, not one per byte.
function byteSink(stream) {
    let chunk = [];
    const flush = () => {
        if (chunk.length) {
            stream.write(Buffer.from(chunk));
            chunk = [];
        }
    };
    const put = (bytes) => {
        for (const c of bytes) {
            chunk.push(c);
            if (c === 10 || chunk.length >= 4096) flush();
        }
    };
    return { put, flush };
}

function vmMkdirs(FS, dir) {
    if (dir && dir !== "/") FS.mkdirTree(dir);
}

function copyHostTreeIn(FS, hostDir, vmDir) {
    vmMkdirs(FS, vmDir);
    if (!fs.existsSync(hostDir)) return;
    for (const entry of fs.readdirSync(hostDir, { withFileTypes: true })) {
        const host = path.join(hostDir, entry.name);
        const vm = vmDir.replace(/\/$/, "") + "/" + entry.name;
        if (entry.isDirectory()) copyHostTreeIn(FS, host, vm);
        else if (entry.isFile()) FS.writeFile(vm, fs.readFileSync(host));
    }
}

// Makes hostDir an exact copy of vmDir: new and changed files written, vanished ones removed.
function mirrorVmTreeOut(FS, vmDir, hostDir) {
    fs.mkdirSync(hostDir, { recursive: true });
    const seen = new Set();
    for (const name of FS.readdir(vmDir)) {
        if (name === "." || name === "..") continue;
        seen.add(name);
        const vm = vmDir.replace(/\/$/, "") + "/" + name;
        const host = path.join(hostDir, name);
        const mode = FS.stat(vm).mode;
        if (FS.isDir(mode)) {
            if (fs.existsSync(host) && !fs.statSync(host).isDirectory()) fs.rmSync(host, { force: true });
            mirrorVmTreeOut(FS, vm, host);
        } else if (FS.isFile(mode)) {
            if (fs.existsSync(host) && fs.statSync(host).isDirectory()) fs.rmSync(host, { recursive: true, force: true });
            fs.writeFileSync(host, FS.readFile(vm));
        }
    }
    for (const name of fs.readdirSync(hostDir)) {
        if (!seen.has(name)) fs.rmSync(path.join(hostDir, name), { recursive: true, force: true });
    }
}

function isCleanExit(message) {
    const lines = String(message).trim().split("\n");
    const last = lines[lines.length - 1] || "";
    return last === "SystemExit" || last === "SystemExit: 0" || last === "SystemExit: None";
}

async function main() {
    let job;
    try {
        job = readJob();
    } catch (err) {
        process.stderr.write(`mp_wasm_run: cannot read the job from stdin: ${err.message}\n`);
        return 2;
    }
    let loadMicroPython;
    try {
        ({ loadMicroPython } = await import(pathToFileURL(job.micropython).href));
    } catch (err) {
        process.stderr.write(`mp_wasm_run: cannot load MicroPython from ${job.micropython}: ${err.message}\n`);
        return 2;
    }
    const out = byteSink(process.stdout);
    const err = byteSink(process.stderr);
    const mp = await loadMicroPython({
        heapsize: job.heapsize || 1024 * 1024,
        pystack: job.pystack || 4096,
        linebuffer: false,
        stdout: (bytes) => out.put(bytes),
        stderr: (bytes) => err.put(bytes),
    });
    const FS = mp.FS;
    for (const tree of job.trees || []) copyHostTreeIn(FS, tree.host, tree.vm);
    for (const [vmPath, b64] of Object.entries(job.files || {})) {
        vmMkdirs(FS, path.posix.dirname(vmPath));
        FS.writeFile(vmPath, Buffer.from(b64, "base64"));
    }
    if (job.cwd) {
        vmMkdirs(FS, job.cwd);
        FS.chdir(job.cwd);
    }

    let status = 0;
    for (const chunk of job.chunks || []) {
        try {
            mp.runPython(chunk);
        } catch (exc) {
            out.flush();
            if (exc && exc.constructor && exc.constructor.name === "PythonError") {
                if (isCleanExit(exc.message)) break;
                err.put(Buffer.from(String(exc.message)));
            } else {
                err.put(Buffer.from(`mp_wasm_run: ${exc && exc.stack ? exc.stack : exc}\n`));
            }
            status = 1;
            break;
        }
    }
    out.flush();
    err.flush();
    for (const tree of job.trees || []) {
        if (tree.writeback) mirrorVmTreeOut(FS, tree.vm, tree.host);
    }
    return status;
}

main().then(
    (status) => { process.exitCode = status; },
    (exc) => { process.stderr.write(`mp_wasm_run: ${exc && exc.stack ? exc.stack : exc}\n`); process.exitCode = 2; },
);
