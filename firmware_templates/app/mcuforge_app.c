/* The mcuforge application, the same on every RTOS: everything platform-specific comes from
 * port.h, everything model-specific from engine.h and mcuforge_config.h.
 *
 * The console protocol (docs/bench-protocol.md; parsed by mcuforge.host_tools.console_protocol)
 * is one JSON object per line:
 *   {"hello":"mcuforge",...}                          once, at start-up
 *   {"inference":N,"cycles":C,"result":{...},...}     telemetry, one per inference of the loop
 *   {"bench":"ready",...}                              bench mode entered (host sent "bench")
 *   {"vec":K,"cycles":C,"out":["0a1bff..."]}           one per "run <hex>" in bench mode
 *   {"done":K}                                         bench mode left (host sent "end")
 *   {"stopped":N}                                      the loop ended; the program exits
 *   {"error":"..."}                                    something failed
 *
 * Built with MCUFORGE_INPUTS_FROM_FILE (the verify harness), it instead runs every vector of
 * inputs.bin and exits: {"vec":...} per vector, then {"done":N}. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "engine.h"
#include "json_writer.h"
#include "mcuforge_app.h"
#include "mcuforge_config.h"
#include "port.h"

enum { EXIT_OK = 0, EXIT_INPUTS = 2, EXIT_INVOKE = 3, EXIT_ENGINE = 5 };

static void report_error(const char *message)
{
    json_text("{\"error\":");
    json_string(message);
    json_text("}\n");
}

static void fail(const char *message, int exit_code) __attribute__((noreturn));
static void fail(const char *message, int exit_code)
{
    report_error(message);
    port_exit(exit_code);
}

static void report_invoke_failure(int status, const char *what, uint32_t index)
{
    json_text("{\"error\":\"" MCUFORGE_MODEL_NAME "_invoke returned ");
    json_i64(status);
    json_text(" on ");
    json_text(what);
    json_text(" ");
    json_u64(index);
    json_text("\"}\n");
}

static uint32_t total_input_bytes(void)
{
    uint32_t total = 0;
    for (int i = 0; i < engine_num_inputs(); i++) {
        total += engine_input_bytes(i);
    }
    return total;
}

static void report_vector(uint32_t index, uint64_t cycles)
{
    json_text("{\"vec\":");
    json_u64(index);
    json_text(",\"cycles\":");
    json_u64(cycles);
    json_text(",\"out\":[");
    for (int i = 0; i < engine_num_outputs(); i++) {
        json_text(i == 0 ? "\"" : ",\"");
        json_hex(engine_output(i), engine_output_bytes(i));
        json_text("\"");
    }
    json_text("]}\n");
}

static uint64_t timed_invoke(int *status)
{
    uint64_t start = port_cycles();
    *status = engine_invoke();
    return port_cycles() - start;
}

static void start_engine(void)
{
    int status = engine_init();
    if (status != 0) {
        json_text("{\"error\":\"the " MCUFORGE_ENGINE_NAME " engine did not start (engine_init returned ");
        json_i64(status);
        json_text(")\"}\n");
        port_exit(EXIT_ENGINE);
    }
}

#if MCUFORGE_INPUTS_FROM_FILE

/* ---- the verify harness: inputs.bin in, one result line per vector ------------------------- */

static int read_sample(void)
{
    for (int i = 0; i < engine_num_inputs(); i++) {
        size_t wanted = engine_input_bytes(i);
        if (port_inputs_read(engine_input(i), wanted) != wanted) {
            return -1;
        }
    }
    return 0;
}

void mcuforge_app_run(void)
{
    port_init();
    start_engine();
    uint32_t file_bytes = 0;
    if (port_inputs_open(&file_bytes) != 0) {
        fail("cannot open inputs.bin", EXIT_INPUTS);
    }
    uint32_t sample_bytes = total_input_bytes();
    if (sample_bytes == 0u || file_bytes % sample_bytes != 0u) {
        json_text("{\"error\":\"inputs.bin has ");
        json_u64(file_bytes);
        json_text(" bytes, not a whole number of samples of ");
        json_u64(sample_bytes);
        json_text(" bytes\"}\n");
        port_exit(EXIT_INPUTS);
    }
    uint32_t samples = file_bytes / sample_bytes;

    for (uint32_t v = 0; v < samples; v++) {
        if (read_sample() != 0) {
            fail("short read from inputs.bin", EXIT_INPUTS);
        }
        int status;
        uint64_t cycles = timed_invoke(&status);
        if (status != 0) {
            report_invoke_failure(status, "vector", v);
            port_exit(EXIT_INVOKE);
        }
        report_vector(v, cycles);
    }
    port_inputs_close();

    json_text("{\"done\":");
    json_u64(samples);
    json_text("}\n");
    port_exit(EXIT_OK);
}

#else

/* ---- the application: duty-cycled inference loop, telemetry, bench mode -------------------- */

/* How long bench mode waits for each console byte before waiting again. */
#define BENCH_WAIT_MS 1000u
#define COMMAND_CHARS 12

/* All inputs, back to back. The loop and bench mode fill this buffer and it is copied into the
 * engine's inputs before every inference, because the engine may reuse that memory. */
static uint8_t input_buffer[MCUFORGE_INPUT_BYTES > 0u ? MCUFORGE_INPUT_BYTES : 1u] __attribute__((aligned(16)));

typedef enum { CMD_NONE, CMD_BENCH, CMD_RUN, CMD_END, CMD_QUIT, CMD_INVALID } command_kind;

/* A console line, taken in one byte at a time so that a bench vector is decoded straight into
 * input_buffer and needs no line buffer of its own. */
typedef struct {
    char word[COMMAND_CHARS];
    uint32_t word_length;
    int in_argument;     /* past the command word */
    uint32_t hex_digits; /* of a run vector */
    int bad_hex;
    int unexpected_argument;
    const char *problem; /* set with CMD_INVALID */
} line_reader;

static line_reader reader;

static void reader_reset(void)
{
    memset(&reader, 0, sizeof reader);
}

static int word_is(const char *name)
{
    size_t n = strlen(name);
    return reader.word_length == n && memcmp(reader.word, name, n) == 0;
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static command_kind finish_line(void)
{
    command_kind kind = CMD_INVALID;
    reader.problem = "unknown command (expected bench, run, end or quit)";
    if (reader.word_length == 0u && !reader.in_argument) {
        kind = CMD_NONE; /* an empty line: the host may send one to resynchronize */
    } else if (reader.word_length > COMMAND_CHARS) {
        reader.problem = "command too long";
    } else if (word_is("run")) {
        if (reader.bad_hex) {
            reader.problem = "run: the vector is not hex";
        } else if (reader.hex_digits != 2u * MCUFORGE_INPUT_BYTES) {
            reader.problem = "run: wrong vector length (send 2 hex digits per input byte, all inputs back to back)";
        } else {
            kind = CMD_RUN;
        }
    } else if (reader.unexpected_argument) {
        reader.problem = "unexpected argument after the command";
    } else if (word_is("bench")) {
        kind = CMD_BENCH;
    } else if (word_is("end")) {
        kind = CMD_END;
    } else if (word_is("quit")) {
        kind = CMD_QUIT;
    }
    const char *problem = reader.problem;
    reader_reset();
    reader.problem = problem;
    return kind;
}

/* Feeds one console byte; returns the command once its line is complete, else CMD_NONE. */
static command_kind reader_feed(int c)
{
    if (c == '\r') {
        return CMD_NONE;
    }
    if (c == '\n') {
        return finish_line();
    }
    if (!reader.in_argument) {
        if (c == ' ') {
            reader.in_argument = 1;
        } else {
            if (reader.word_length < COMMAND_CHARS) {
                reader.word[reader.word_length] = (char)c;
            }
            reader.word_length++;
        }
        return CMD_NONE;
    }
    if (!word_is("run")) {
        if (c != ' ') {
            reader.unexpected_argument = 1;
        }
        return CMD_NONE;
    }
    int value = hex_value(c);
    if (value < 0) {
        reader.bad_hex = 1;
        return CMD_NONE;
    }
    uint32_t byte = reader.hex_digits / 2u;
    if (byte < MCUFORGE_INPUT_BYTES) {
        if (reader.hex_digits % 2u == 0u) {
            input_buffer[byte] = (uint8_t)(value << 4);
        } else {
            input_buffer[byte] = (uint8_t)(input_buffer[byte] | (uint8_t)value);
        }
    }
    reader.hex_digits++;
    return CMD_NONE;
}

static void load_inputs(void)
{
    uint32_t offset = 0;
    for (int i = 0; i < engine_num_inputs(); i++) {
        uint32_t n = engine_input_bytes(i);
        memcpy(engine_input(i), &input_buffer[offset], n);
        offset += n;
    }
}

static void write_sizes(const char *key, int count, uint32_t (*size_of)(int))
{
    json_text(",\"");
    json_text(key);
    json_text("\":[");
    for (int i = 0; i < count; i++) {
        if (i > 0) {
            json_text(",");
        }
        json_u64(size_of(i));
    }
    json_text("]");
}

static void report_hello(void)
{
    json_text("{\"hello\":\"mcuforge\",\"protocol\":1,\"board\":");
    json_string(MCUFORGE_BOARD_NAME);
    json_text(",\"rtos\":");
    json_string(MCUFORGE_RTOS_NAME);
    json_text(",\"engine\":");
    json_string(MCUFORGE_ENGINE_NAME);
    json_text(",\"model\":");
    json_string(MCUFORGE_MODEL_NAME);
    json_text(",\"clock_hz\":");
    json_u64(MCUFORGE_CLOCK_HZ);
    json_text(",\"cycle_counter\":");
    json_string(MCUFORGE_CYCLE_COUNTER_NAME);
    json_text(",\"period_ms\":");
    json_u64(MCUFORGE_PERIOD_MS);
    json_text(",\"iterations\":");
    json_u64(MCUFORGE_ITERATIONS);
    write_sizes("inputs", engine_num_inputs(), engine_input_bytes);
    write_sizes("outputs", engine_num_outputs(), engine_output_bytes);
    json_text("}\n");
}

/* The class with the highest score in output 0, and that score. */
static void write_result(void)
{
    const void *output = engine_output(0);
    uint32_t bytes = engine_output_bytes(0);
    json_text("\"result\":{");
#if MCUFORGE_RESULT_TYPE == MCUFORGE_RESULT_INT8
    const int8_t *scores = (const int8_t *)output;
    uint32_t best = 0;
    for (uint32_t i = 1; i < bytes; i++) {
        if (scores[i] > scores[best]) {
            best = i;
        }
    }
    json_text("\"class\":");
    json_u64(best);
    json_text(",\"score\":");
    json_i64(bytes > 0u ? scores[best] : 0);
#elif MCUFORGE_RESULT_TYPE == MCUFORGE_RESULT_FLOAT32
    const float *scores = (const float *)output;
    uint32_t count = bytes / (uint32_t)sizeof(float);
    uint32_t best = 0;
    for (uint32_t i = 1; i < count; i++) {
        if (scores[i] > scores[best]) {
            best = i;
        }
    }
    json_text("\"class\":");
    json_u64(best);
    json_text(",\"score\":");
    json_f32(count > 0u ? scores[best] : 0.0f);
#else
    json_text("\"hex\":\"");
    json_hex(output, bytes < 32u ? bytes : 32u);
    json_text("\"");
#endif
    json_text("}");
}

static void report_telemetry(uint32_t index, uint64_t cycles)
{
    json_text("{\"inference\":");
    json_u64(index);
    json_text(",\"cycles\":");
    json_u64(cycles);
    json_text(",");
    write_result();
    json_text(",\"stack_hwm\":");
    json_count_or_null(port_stack_high_water());
    json_text(",\"heap_hwm\":");
    json_count_or_null(port_heap_high_water());
    json_text(",\"uptime_ms\":");
    json_u64(port_millis());
    json_text("}\n");
}

static void report_count(const char *key, uint32_t count)
{
    json_text("{\"");
    json_text(key);
    json_text("\":");
    json_u64(count);
    json_text("}\n");
}

static void stop(uint32_t inferences) __attribute__((noreturn));
static void stop(uint32_t inferences)
{
    report_count("stopped", inferences);
    port_exit(EXIT_OK);
}

static uint32_t inferences_done;

static void report_bench_ready(void)
{
    json_text("{\"bench\":\"ready\"");
    write_sizes("inputs", engine_num_inputs(), engine_input_bytes);
    write_sizes("outputs", engine_num_outputs(), engine_output_bytes);
    json_text("}\n");
}

/* Bench mode: the loop pauses; every "run <hex>" is one inference on that vector, answered
 * with its outputs and cycles. Returns on "end". */
static void bench_session(void)
{
    uint32_t runs = 0;
    report_bench_ready();
    for (;;) {
        int c = port_console_read(BENCH_WAIT_MS);
        if (c == PORT_CONSOLE_CLOSED) {
            report_count("done", runs);
            stop(inferences_done);
        }
        if (c < 0) {
            continue;
        }
        switch (reader_feed(c)) {
        case CMD_NONE:
            break;
        case CMD_BENCH:
            runs = 0;
            report_bench_ready();
            break;
        case CMD_RUN: {
            int status;
            load_inputs();
            uint64_t cycles = timed_invoke(&status);
            if (status != 0) {
                report_invoke_failure(status, "vector", runs);
            } else {
                report_vector(runs, cycles);
            }
            runs++;
            break;
        }
        case CMD_END:
            report_count("done", runs);
            return;
        case CMD_QUIT:
            report_count("done", runs);
            stop(inferences_done);
        case CMD_INVALID:
            report_error(reader.problem);
            break;
        }
    }
}

/* Outside bench mode: the commands that can arrive while the loop waits. */
static void serve_command(command_kind kind)
{
    switch (kind) {
    case CMD_BENCH:
        bench_session();
        break;
    case CMD_QUIT:
        stop(inferences_done);
    case CMD_RUN:
    case CMD_END:
        report_error("not in bench mode: send bench first");
        break;
    case CMD_INVALID:
        report_error(reader.problem);
        break;
    case CMD_NONE:
        break;
    }
}

/* Sleep until `period_start` + the period, serving the console meanwhile. */
static void wait_for_next_period(uint32_t period_start)
{
    for (;;) {
        uint32_t elapsed = port_millis() - period_start;
        uint32_t remaining = elapsed >= MCUFORGE_PERIOD_MS ? 0u : MCUFORGE_PERIOD_MS - elapsed;
        int c = port_console_read(remaining);
        if (c >= 0) {
            serve_command(reader_feed(c));
            continue;
        }
        if (remaining == 0u || c == PORT_CONSOLE_CLOSED) {
            return;
        }
    }
}

void mcuforge_app_run(void)
{
    port_init();
    start_engine();
    if (total_input_bytes() != MCUFORGE_INPUT_BYTES) {
        json_text("{\"error\":\"the model's inputs take ");
        json_u64(total_input_bytes());
        json_text(" bytes, but the project was rendered for ");
        json_u64(MCUFORGE_INPUT_BYTES);
        json_text(": render it again from the same model\"}\n");
        port_exit(EXIT_ENGINE);
    }
    reader_reset();
    report_hello();
    while (MCUFORGE_ITERATIONS == 0u || inferences_done < MCUFORGE_ITERATIONS) {
        uint32_t period_start = port_millis();
        mcuforge_input_fill(input_buffer, MCUFORGE_INPUT_BYTES, inferences_done);
        load_inputs();
        int status;
        uint64_t cycles = timed_invoke(&status);
        if (status != 0) {
            report_invoke_failure(status, "inference", inferences_done);
        } else {
            report_telemetry(inferences_done, cycles);
        }
        inferences_done++;
        wait_for_next_period(period_start);
    }
    stop(inferences_done);
}

#endif
