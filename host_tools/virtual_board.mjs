// The virtual MicroPython board: the WebAssembly port of MicroPython behind a console byte
// stream, with a simulated `machine`, a virtual clock and a host folder for its flash.
//
// host_tools/virtual_board.py starts this script with one JSON argument (the config below),
// puts a pseudo-terminal in front of its stdin/stdout, and passes the board's UART link as a
// socket (config.uartFd). Everything else is here:
//
//   main thread   console bytes in (stdin) and out (stdout), UART bytes in and out (uartFd);
//                 Ctrl-C raises a shared flag at once, so a running program can be interrupted
//   worker        the MicroPython VM. It runs synchronously and reads its input from shared
//                 ring buffers, so a program that waits (time.sleep, UART.read) sees new input
//                 and Ctrl-C while it runs, as it would on a board.
//
// The REPL protocol details mpremote relies on, which the port's event-driven REPL lacks:
//   soft reset   Ctrl-D on an empty line (or sys.exit, machine.soft_reset) starts a fresh VM
//                and prints "MPY: soft reboot\r\n"; a raw REPL stays a raw REPL, as on a board
//   raw paste    "\x05A\x01" is answered with "R\x01", a window size and flow control; the
//                pasted code then runs through the raw REPL (the port itself would block on it)
//   resets       machine.reset(), deepsleep() and the watchdog restart the VM with the right
//                reset cause; deepsleep first advances the virtual clock
//
// config: { micropython, simDir, flashDir, sensorTrace, heapBytes, pystackWords, uartFd,
//           uniqueId, flashBytes }
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";

const RING_BYTES = 1 << 16;
// Words of the shared control array.
const CTL_INTERRUPT = 0; // 1 while a Ctrl-C waits to be delivered to running code
const CTL_SEQ = 1;       // bumped on every input; the worker waits on it
const CTL_WORDS = 4;

const PASTE_WINDOW = 4096;
const RAW_BANNER = "raw REPL; CTRL-B to exit\r\n";
const FRIENDLY_BANNER_END = 'Type "help()" for more information.\r\n';

const RESET_CAUSE = { power_on: 1, hard: 2, watchdog: 3, deepsleep: 4, soft: 5 };
const TIMER_WAKE = 4;

// Single-producer, single-consumer byte ring in a SharedArrayBuffer: [head, tail] then data.
class Ring {
    static create(size) {
        return new Ring(new SharedArrayBuffer(8 + size));
    }

    constructor(sab) {
        this.sab = sab;
        this.index = new Int32Array(sab, 0, 2);
        this.data = new Uint8Array(sab, 8);
        this.size = this.data.length;
    }

    available() {
        const head = Atomics.load(this.index, 0);
        const tail = Atomics.load(this.index, 1);
        return (head - tail + this.size) % this.size;
    }

    write(bytes) {
        let head = Atomics.load(this.index, 0);
        const count = Math.min(bytes.length, this.size - 1 - this.available());
        for (let i = 0; i < count; i++) {
            this.data[head] = bytes[i];
            head = (head + 1) % this.size;
        }
        Atomics.store(this.index, 0, head);
        return count;
    }

    read(max) {
        let tail = Atomics.load(this.index, 1);
        const count = Math.min(max, this.available());
        const out = new Uint8Array(count);
        for (let i = 0; i < count; i++) {
            out[i] = this.data[tail];
            tail = (tail + 1) % this.size;
        }
        Atomics.store(this.index, 1, tail);
        return out;
    }
}

if (isMainThread) {
    runHost(JSON.parse(process.argv[2]));
} else {
    runBoard(workerData).catch((error) => {
        parentPort.postMessage({ fatal: String(error && error.stack || error) });
    });
}

// ---- main thread: byte streams ---------------------------------------------------------------

function runHost(config) {
    const ctl = new Int32Array(new SharedArrayBuffer(4 * CTL_WORDS));
    const consoleRing = Ring.create(RING_BYTES);
    const uartRing = Ring.create(RING_BYTES);
    const worker = new Worker(new URL(import.meta.url), {
        workerData: { config, ctl: ctl.buffer, consoleRing: consoleRing.sab, uartRing: uartRing.sab },
    });
    const backlog = { console: [], uart: [] };
    let retry = null;

    // Moves queued input into the rings; what does not fit waits for the board to read.
    const pump = () => {
        let moved = false;
        for (const [name, ring] of [["console", consoleRing], ["uart", uartRing]]) {
            const queue = backlog[name];
            while (queue.length) {
                const written = ring.write(queue[0]);
                if (written) moved = true;
                if (written < queue[0].length) {
                    queue[0] = queue[0].subarray(written);
                    break;
                }
                queue.shift();
            }
        }
        if (moved) {
            Atomics.add(ctl, CTL_SEQ, 1);
            Atomics.notify(ctl, CTL_SEQ);
        }
        if ((backlog.console.length || backlog.uart.length) && retry === null) {
            retry = setTimeout(() => { retry = null; pump(); }, 2);
        }
    };

    process.stdin.on("data", (chunk) => {
        if (chunk.includes(3)) {
            Atomics.store(ctl, CTL_INTERRUPT, 1);
            Atomics.notify(ctl, CTL_INTERRUPT);
        }
        backlog.console.push(chunk);
        pump();
    });
    // The host closed the console: the board is switched off.
    process.stdin.on("end", () => process.exit(0));

    let uart = null;
    if (config.uartFd !== null && config.uartFd !== undefined) {
        uart = new net.Socket({ fd: config.uartFd, readable: true, writable: true });
        uart.on("data", (chunk) => { backlog.uart.push(chunk); pump(); });
        uart.on("error", () => {});
    }

    worker.on("message", (message) => {
        if (message.out) {
            process.stdout.write(Buffer.from(message.out));
        } else if (message.uart) {
            if (uart) uart.write(Buffer.from(message.uart));
        } else if (message.fatal) {
            process.stderr.write(`virtual board failed: ${message.fatal}\n`);
            process.exit(3);
        }
    });
    worker.on("error", (error) => {
        process.stderr.write(`virtual board failed: ${error && error.stack || error}\n`);
        process.exit(3);
    });
    worker.on("exit", (code) => process.exit(code));
}

// ---- worker: the board -------------------------------------------------------------------------

async function runBoard({ config, ctl: ctlBuffer, consoleRing: consoleSab, uartRing: uartSab }) {
    const ctl = new Int32Array(ctlBuffer);
    const consoleRing = new Ring(consoleSab);
    const uartRing = new Ring(uartSab);
    const { loadMicroPython } = await import(pathToFileURL(config.micropython).href);
    const simSources = fs.readdirSync(config.simDir).filter((n) => n.endsWith(".py")).sort()
        .map((name) => [name, fs.readFileSync(path.join(config.simDir, name))]);
    const trace = loadTrace(config.sensorTrace);
    const flash = new HostFlash(config.flashDir, config.flashBytes);

    // Survives soft resets and deep sleep; a power cycle (a new process) starts it again.
    const board = {
        raw: false,
        resetCause: RESET_CAUSE.power_on,
        wake: 0,
        powerOnMs: performance.now(),
        clockOffsetUs: 0,
        rtcAtZeroUs: Date.now() * 1000,
        rtcMemory: "",
        pins: {},
    };
    let vm = null;
    let resetRequest = null;
    let pendingInput = [];

    // ---- console output ----
    let outBuf = [];
    let recent = "";
    let mute = false;
    let dropPrefix = "";
    let lastByte = 0;

    const flush = () => {
        if (outBuf.length) {
            parentPort.postMessage({ out: Uint8Array.from(outBuf) });
            outBuf = [];
        }
    };
    const watchMode = (c) => {
        recent = (recent + String.fromCharCode(c)).slice(-64);
        if (recent.endsWith(RAW_BANNER)) board.raw = true;
        else if (recent.endsWith(FRIENDLY_BANNER_END)) board.raw = false;
    };
    const putByte = (c) => {
        watchMode(c);
        if (dropPrefix) {
            if (c === dropPrefix.charCodeAt(0)) {
                dropPrefix = dropPrefix.slice(1);
                return;
            }
            dropPrefix = "";
        }
        if (!mute) {
            outBuf.push(c);
            if (c === 10 || outBuf.length >= 4096) flush();
        }
    };
    // A board's stdout turns "\n" into "\r\n"; the port's does not.
    const onVmOutput = (bytes) => {
        for (const c of bytes) {
            if (c === 10 && lastByte !== 13) putByte(13);
            putByte(c);
            lastByte = c;
        }
    };
    const emit = (text) => {
        for (const c of Buffer.from(text, "latin1")) putByte(c);
        lastByte = 0;
        flush();
    };

    // ---- clock ----
    const clockUs = () => Math.floor((performance.now() - board.powerOnMs) * 1000) + board.clockOffsetUs;

    const deliverInterrupt = () => {
        if (Atomics.load(ctl, CTL_INTERRUPT) && vm) {
            Atomics.store(ctl, CTL_INTERRUPT, 0);
            vm._module._mp_sched_keyboard_interrupt();
            return true;
        }
        return false;
    };
    // Waits up to `ms` (forever if negative) until ready() holds or Ctrl-C arrives.
    const waitFor = (ms, ready) => {
        flush();
        const deadline = ms < 0 ? Infinity : performance.now() + ms;
        for (;;) {
            if (deliverInterrupt() || ready()) return;
            const left = deadline - performance.now();
            if (left <= 0) return;
            const seq = Atomics.load(ctl, CTL_SEQ);
            Atomics.wait(ctl, CTL_SEQ, seq, Math.min(left, 50));
        }
    };

    // ---- the _vboard module: what the simulated machine, time and flash call ----
    const api = {
        poll: () => { flush(); deliverInterrupt(); return 0; },
        sleep_ms: (ms) => { waitFor(Math.max(Number(ms) || 0, 0), () => false); return 0; },
        wait_event: (ms) => {
            waitFor(Number(ms), () => uartRing.available() > 0 || consoleRing.available() > 0);
            return 0;
        },
        clock_us: () => String(clockUs()),
        advance_us: (us) => { board.clockOffsetUs += Math.max(Number(us), 0); return 0; },
        rtc_us: () => String(board.rtcAtZeroUs + clockUs()),
        rtc_set_us: (us) => { board.rtcAtZeroUs = Number(us) - clockUs(); return 0; },
        rtc_memory: () => board.rtcMemory,
        rtc_memory_set: (hex) => { board.rtcMemory = String(hex); return 0; },
        reset_cause: () => board.resetCause,
        wake_reason: () => board.wake,
        request_reset: (kind, ms) => { resetRequest = { kind: String(kind), ms: Number(ms) || 0 }; return 0; },
        unique_id: () => config.uniqueId,
        adc_read: (channel) => {
            const value = trace.sample("adc" + channel, clockUs() / 1e6);
            return value === null ? 0 : Math.max(0, Math.min(65535, Math.round(value)));
        },
        pin_read: (id) => {
            const value = trace.sample("pin" + id, clockUs() / 1e6, true);
            return value === null ? -1 : (value ? 1 : 0);
        },
        pin_write: (id, value) => { board.pins[String(id)] = value ? 1 : 0; return 0; },
        uart_write: (hex) => {
            const data = Buffer.from(String(hex), "hex");
            parentPort.postMessage({ uart: Uint8Array.from(data) });
            return data.length;
        },
        uart_any: () => uartRing.available(),
        uart_read: (n, timeoutMs) => {
            if (uartRing.available() === 0 && Number(timeoutMs) > 0) {
                waitFor(Number(timeoutMs), () => uartRing.available() > 0);
            }
            const want = Number(n) < 0 ? RING_BYTES : Number(n);
            return Buffer.from(uartRing.read(want)).toString("hex");
        },
        fs_stat: (p) => flash.stat(String(p)),
        fs_listdir: (p) => flash.listdir(String(p)),
        fs_mkdir: (p) => flash.call(() => fs.mkdirSync(flash.host(String(p)))),
        fs_rmdir: (p) => flash.call(() => fs.rmdirSync(flash.host(String(p)))),
        fs_remove: (p) => flash.remove(String(p)),
        fs_rename: (a, b) => flash.call(() => fs.renameSync(flash.host(String(a)), flash.host(String(b)))),
        fs_open: (p, mode) => flash.open(String(p), String(mode)),
        fs_read: (fd, n, pos) => flash.read(fd, Number(n), Number(pos)),
        fs_write: (fd, hex, pos) => flash.write(fd, String(hex), Number(pos)),
        fs_fsize: (fd) => flash.fsize(fd),
        fs_close: (fd) => flash.close(fd),
        fs_statvfs: () => flash.statvfs(),
    };

    // The VM itself failed (a JavaScript error out of the port, a wasm trap): as a board does
    // after a hard fault, say so and reset. Inside a raw REPL command the reply is completed
    // first, so that mpremote gets an error rather than waiting for ever.
    const crash = (error, inCommand) => {
        const text = `[virtual board: MicroPython crashed: ${String(error && error.message || error).split("\n")[0]}]`;
        dropPrefix = "";
        emit(inCommand ? `\x04${text}\r\n\x04` : `\r\n${text}\r\n`);
        resetRequest = { kind: "hard", ms: 0, crashed: true };
    };

    const runPython = (code) => {
        try {
            vm.runPython(code);
            return null;
        } catch (error) {
            if (error && error.name === "PythonError") return error;
            crash(error, false);
            return error;
        }
    };

    // A fresh VM, as a port's main() makes one after every reset.
    const boot = async (kind) => {
        flash.closeAll();
        mute = false;
        dropPrefix = "";
        if (kind === "soft") {
            emit("MPY: soft reboot\r\n");
        } else {
            board.raw = false;
            board.resetCause = RESET_CAUSE[kind] || RESET_CAUSE.hard;
        }
        vm = await loadMicroPython({
            heapsize: config.heapBytes, pystack: config.pystackWords, linebuffer: false,
            stdout: onVmOutput, stderr: onVmOutput,
        });
        vm.registerJsModule("_vboard", api);
        vm.FS.mkdir("/.vboard");
        for (const [name, source] of simSources) vm.FS.writeFile(`/.vboard/${name}`, source);
        const failed = runPython("import sys\nsys.path.insert(0, '/.vboard')\nimport _vb_boot\n_vb_boot.install()\n");
        if (failed) throw new Error(`the simulated board did not start: ${failed.message}`);
        if (resetRequest) return;
        for (const file of board.raw ? ["boot.py"] : ["boot.py", "main.py"]) {
            runPython(`_vb_boot.run_file(${JSON.stringify(file)})`);
            flush();
            if (resetRequest) return;
        }
        // The port's REPL starts friendly; a board in the raw REPL before a soft reset is in it after.
        const raw = board.raw;
        mute = raw;
        vm.replInit();
        if (raw) vm.replProcessChar(1);
        mute = false;
        board.raw = raw;
        if (raw) emit(RAW_BANNER + ">");
        lastByte = 0;
        flush();
    };

    // ---- console input ----
    let rawLineLength = 0;
    let paste = null; // null, { header: [] } while reading "\x05A\x01", or { data: [] } while pasting

    const vmChar = (c) => {
        let result;
        try {
            result = vm.replProcessChar(c);
        } catch (error) {
            crash(error, board.raw && c === 4);
            result = 1;
        }
        flush();
        return result;
    };

    // Feeds one console byte; returns true when the VM asked for a reset.
    const feed = (c) => {
        if (paste && paste.header) {
            if (c !== 1) {
                paste.header.push(c);
                return false;
            }
            const supported = paste.header.length === 1 && paste.header[0] === 0x41;
            paste = supported ? { data: [] } : null;
            emit(supported ? "R\x01" + String.fromCharCode(PASTE_WINDOW & 0xff, PASTE_WINDOW >> 8) + "\x01"
                           : "R\x00");
            return false;
        }
        if (paste) {
            if (c === 3) {
                // Abandoned: back to an empty raw REPL line.
                paste = null;
                emit("\x04");
                return false;
            }
            if (c !== 4) {
                paste.data.push(c);
                if (paste.data.length % PASTE_WINDOW === 0) emit("\x01");
                return false;
            }
            const code = paste.data;
            paste = null;
            emit("\x04");
            // The raw REPL answers "OK" to the code it receives; raw paste has no such reply.
            dropPrefix = "OK";
            for (const byte of code) vmChar(byte);
            rawLineLength = 0;
            return vmChar(4) !== 0 || resetRequest !== null;
        }
        if (board.raw && rawLineLength === 0 && c === 5) {
            paste = { header: [] };
            return false;
        }
        if (c === 1 || c === 3 || c === 4) rawLineLength = 0;
        else rawLineLength++;
        return vmChar(c) !== 0 || resetRequest !== null;
    };

    // Runs the REPL until the VM asks for a reset; returns the kind of reset.
    const repl = () => {
        for (;;) {
            if (resetRequest) return resetRequest;
            let chunk = pendingInput;
            pendingInput = [];
            if (!chunk.length) chunk = consoleRing.read(RING_BYTES);
            if (!chunk.length) {
                const seq = Atomics.load(ctl, CTL_SEQ);
                if (consoleRing.available() === 0) Atomics.wait(ctl, CTL_SEQ, seq, 1000);
                continue;
            }
            for (let i = 0; i < chunk.length; i++) {
                if (chunk[i] === 3) Atomics.store(ctl, CTL_INTERRUPT, 0);
                if (feed(chunk[i])) {
                    pendingInput = Array.from(chunk.subarray ? chunk.subarray(i + 1) : chunk.slice(i + 1));
                    return resetRequest || { kind: "soft", ms: 0 };
                }
            }
        }
    };

    let next = { kind: "power_on", ms: 0 };
    for (;;) {
        resetRequest = null;
        rawLineLength = 0;
        paste = null;
        if (next.kind !== "soft") board.wake = 0;
        if (next.kind === "deepsleep") {
            if (next.ms > 0) {
                board.clockOffsetUs += next.ms * 1000;
                board.wake = TIMER_WAKE;
            } else {
                // No timer: asleep until something arrives on the console (the reset button).
                while (consoleRing.available() === 0) {
                    Atomics.wait(ctl, CTL_SEQ, Atomics.load(ctl, CTL_SEQ), 1000);
                }
            }
        }
        await boot(next.kind);
        next = resetRequest || repl();
        if (next.crashed) {
            // A board takes a moment to come back from a fault; a boot loop must not spin.
            Atomics.wait(ctl, CTL_WORDS - 1, 0, 300);
        }
    }
}

// ---- the flash: a host folder ----------------------------------------------------------------

const ERRNO = {
    EPERM: 1, ENOENT: 2, EIO: 5, EBADF: 9, EACCES: 13, EEXIST: 17, EXDEV: 18, ENODEV: 19,
    ENOTDIR: 20, EISDIR: 21, EINVAL: 22, ENOSPC: 28, EROFS: 30, ENAMETOOLONG: 36, ENOTEMPTY: 39,
};
const BLOCK = 4096;

class HostFlash {
    constructor(root, capacity) {
        this.root = path.resolve(root);
        this.capacity = capacity;
        this.files = new Set();
        this.used = null;
    }

    // The host path of a board path; nothing outside the folder is reachable.
    host(boardPath) {
        const relative = path.posix.normalize("/" + boardPath).slice(1);
        const full = path.join(this.root, relative);
        if (full !== this.root && !full.startsWith(this.root + path.sep)) {
            const error = new Error("outside the flash");
            error.code = "EACCES";
            throw error;
        }
        return full;
    }

    errno(error) {
        return ERRNO[error && error.code] || ERRNO.EIO;
    }

    call(action) {
        try {
            action();
            this.used = null;
            return 0;
        } catch (error) {
            return this.errno(error);
        }
    }

    usedBytes() {
        if (this.used === null) {
            let total = 0;
            const walk = (dir) => {
                for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
                    const full = path.join(dir, entry.name);
                    if (entry.isDirectory()) {
                        total += BLOCK;
                        walk(full);
                    } else if (entry.isFile()) {
                        total += Math.ceil(fs.statSync(full).size / BLOCK) * BLOCK;
                    }
                }
            };
            walk(this.root);
            this.used = total;
        }
        return this.used;
    }

    stat(boardPath) {
        try {
            const st = fs.statSync(this.host(boardPath));
            const dir = st.isDirectory();
            return `${dir ? "d" : "f"} ${dir ? 0 : st.size} ${Math.floor(st.mtimeMs / 1000)}`;
        } catch (error) {
            return "!" + this.errno(error);
        }
    }

    listdir(boardPath) {
        try {
            const dir = this.host(boardPath);
            const lines = [];
            for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
                if (entry.isDirectory()) lines.push(`d\t0\t${entry.name}`);
                else if (entry.isFile()) lines.push(`f\t${fs.statSync(path.join(dir, entry.name)).size}\t${entry.name}`);
            }
            return lines.sort((a, b) => (a.split("\t")[2] < b.split("\t")[2] ? -1 : 1)).join("\n");
        } catch (error) {
            return "!" + this.errno(error);
        }
    }

    remove(boardPath) {
        try {
            const full = this.host(boardPath);
            if (fs.statSync(full).isDirectory()) return ERRNO.EISDIR;
            fs.unlinkSync(full);
            this.used = null;
            return 0;
        } catch (error) {
            return this.errno(error);
        }
    }

    open(boardPath, mode) {
        try {
            const full = this.host(boardPath);
            if (fs.existsSync(full) && fs.statSync(full).isDirectory()) return -ERRNO.EISDIR;
            const plus = mode.includes("+");
            let flags;
            if (mode.includes("w")) flags = plus ? "w+" : "w";
            else if (mode.includes("a")) flags = plus ? "a+" : "a";
            else if (mode.includes("x")) flags = plus ? "wx+" : "wx";
            else flags = plus ? "r+" : "r";
            const fd = fs.openSync(full, flags);
            this.files.add(fd);
            this.used = null;
            return fd;
        } catch (error) {
            return -this.errno(error);
        }
    }

    read(fd, n, position) {
        if (!this.files.has(fd)) return "";
        const buffer = Buffer.alloc(Math.max(n, 0));
        const count = fs.readSync(fd, buffer, 0, buffer.length, position);
        return buffer.subarray(0, count).toString("hex");
    }

    write(fd, hex, position) {
        if (!this.files.has(fd)) return -ERRNO.EBADF;
        const data = Buffer.from(hex, "hex");
        try {
            const size = fs.fstatSync(fd).size;
            const growth = Math.max(position + data.length - size, 0);
            const newBlocks = Math.ceil((size + growth) / BLOCK) - Math.ceil(size / BLOCK);
            if (newBlocks > 0 && this.usedBytes() + newBlocks * BLOCK > this.capacity) return -ERRNO.ENOSPC;
            const written = fs.writeSync(fd, data, 0, data.length, position);
            if (this.used !== null) this.used += newBlocks * BLOCK;
            return written;
        } catch (error) {
            return -this.errno(error);
        }
    }

    fsize(fd) {
        if (!this.files.has(fd)) return -ERRNO.EBADF;
        return fs.fstatSync(fd).size;
    }

    close(fd) {
        if (this.files.delete(fd)) fs.closeSync(fd);
        return 0;
    }

    closeAll() {
        for (const fd of this.files) fs.closeSync(fd);
        this.files.clear();
    }

    statvfs() {
        const blocks = Math.floor(this.capacity / BLOCK);
        const free = Math.max(blocks - Math.ceil(this.usedBytes() / BLOCK), 0);
        return `${BLOCK} ${BLOCK} ${blocks} ${free} ${free} 0 0 0 0 255`;
    }
}

// ---- the sensor trace ------------------------------------------------------------------------

// A CSV file: a header "t,adc0,pin4,..." then one row per instant, t in seconds of virtual
// time since power-on. ADC columns are raw read_u16() counts, interpolated linearly; pin
// columns are levels, held until the next row. The trace repeats once it runs out.
function loadTrace(file) {
    const empty = { sample: () => null };
    if (!file) return empty;
    const lines = fs.readFileSync(file, "utf8").split(/\r?\n/)
        .map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
    if (lines.length < 2) return empty;
    const header = lines[0].split(",").map((h) => h.trim().toLowerCase());
    const rows = lines.slice(1).map((l) => l.split(",").map(Number));
    const times = rows.map((r) => r[0]);
    const span = times.length > 1 ? times[times.length - 1] + (times[times.length - 1] - times[times.length - 2]) : 1;
    return {
        sample(column, seconds, step = false) {
            const index = header.indexOf(column);
            if (index < 1) return null;
            const t = times[0] + ((seconds % span) + span) % span;
            let i = 0;
            while (i + 1 < rows.length && times[i + 1] <= t) i++;
            const a = rows[i][index];
            if (step || i + 1 >= rows.length) return a;
            const b = rows[i + 1][index];
            const f = (t - times[i]) / (times[i + 1] - times[i]);
            return a + (b - a) * f;
        },
    };
}
