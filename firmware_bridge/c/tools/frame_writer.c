/*
 * frame_writer: write framed-protocol frames made by the C library to a file
 * descriptor, a tty or a file, optionally with garbage and corrupted frames between
 * them. The Python tests use it to feed a pseudo-terminal; it also drives a real
 * UART for bench tests of a gateway.
 *
 *   frame_writer [--fd N | --path TTY [--baud B]] [options]
 *
 * Generated mode (--count N): optionally one HELLO (--hello FIRMWARE), then N
 * READING frames of SENSOR/METRIC (--sensor mcu-1 --metric n, int32 value = index).
 *   --garbage-every K   after every K-th frame, 1..48 random bytes (zeros included)
 *   --corrupt-every K   flip one encoded byte of every K-th frame (a CRC or COBS fault)
 *   --seed S            the garbage and corruption generator's seed
 * Script mode (--script FILE, "-" for stdin), one command per line:
 *   hello SEQ FIRMWARE PART PARTS [SENSOR/METRIC:UNIT:VTYPE ...]
 *   reading SEQ FLAGS SENSOR METRIC UNIT VTYPE VALUE
 *       UNIT "-" for none; VALUE: decimal for int32/int64, 0x<bits> for
 *       float32/float64, 0/1 for bool, hex UTF-8 ("-" for empty) for text
 *   attest SEQ ALG SIGNED_SEQ SIGNATURE_HEX
 *   garbage HEX         raw bytes, written as they are
 *   corrupt             flip one encoded byte of the next frame
 * Output pacing: --chunk N writes N bytes at a time, --delay-ms D sleeps between
 * writes. A summary line goes to stderr: frames, corrupted, garbage, bytes.
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "edgeledger_frame.h"

static int out_fd = 1;
static size_t chunk = 0;
static long delay_ms = 0;
static unsigned long total, frames, corrupted, garbage;
static uint32_t rng = 1;

static uint32_t next_random(void)
{
    rng = rng * 1664525UL + 1013904223UL;
    return rng >> 8;
}

static void die(const char *what)
{
    fprintf(stderr, "frame_writer: %s: %s\n", what, errno ? strerror(errno) : "invalid");
    exit(2);
}

static void pause_ms(long ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

static void emit(const uint8_t *p, size_t n)
{
    while (n > 0) {
        size_t part = chunk && chunk < n ? chunk : n;
        ssize_t w = write(out_fd, p, part);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                pause_ms(1);
                continue;
            }
            die("write");
        }
        p += w;
        n -= (size_t)w;
        total += (unsigned long)w;
        if (delay_ms)
            pause_ms(delay_ms);
    }
}

/* Send a sealed frame, flipping one encoded byte (never into 0x00) if asked. */
static void send_frame(uint8_t *wire, size_t n, int corrupt)
{
    if (n == 0)
        die("encode (a bad field or a frame over 254 bytes)");
    if (corrupt) {
        size_t at = 1 + next_random() % (n - 2);
        uint8_t flip = (uint8_t)(1 + next_random() % 255);
        if ((wire[at] ^ flip) == 0)
            flip ^= 0x01;
        wire[at] ^= flip;
        corrupted++;
    }
    emit(wire, n);
    frames++;
}

static void send_garbage(void)
{
    uint8_t g[48];
    size_t i, n = 1 + next_random() % sizeof g;
    for (i = 0; i < n; i++)
        g[i] = (uint8_t)next_random();
    emit(g, n);
    garbage++;
}

static int unhex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = strlen(s), i;
    if (strcmp(s, "-") == 0)
        return 0;
    if (n % 2 || n / 2 > cap)
        return -1;
    for (i = 0; i < n / 2; i++) {
        unsigned int b;
        if (sscanf(s + 2 * i, "%2x", &b) != 1)
            return -1;
        out[i] = (uint8_t)b;
    }
    return (int)(n / 2);
}

static el_value parse_value(unsigned vtype, char *text, char *textbuf)
{
    el_value v;
    memset(&v, 0, sizeof v);
    switch (vtype) {
    case EL_INT32: return el_int32((int32_t)strtol(text, NULL, 10));
    case EL_INT64: return el_int64((int64_t)strtoll(text, NULL, 10));
    case EL_FLOAT32: {
        uint32_t b = (uint32_t)strtoul(text, NULL, 16);
        float f;
        memcpy(&f, &b, 4);
        return el_float32(f);
    }
    case EL_FLOAT64: {
        uint64_t b = (uint64_t)strtoull(text, NULL, 16);
        double d;
        memcpy(&d, &b, 8);
        return el_float64(d);
    }
    case EL_BOOL: return el_bool(atoi(text));
    case EL_TEXT: {
        int n = unhex(text, (uint8_t *)textbuf, 200);
        if (n < 0)
            die("text value hex");
        textbuf[n] = 0;
        v = el_text(textbuf);
        v.as.text.len = (uint8_t)n;    /* may hold a NUL */
        return v;
    }
    }
    v.vtype = (uint8_t)vtype;          /* let the encoder refuse it */
    return v;
}

static void run_script(FILE *in)
{
    char line[2048];
    int corrupt_next = 0;
    while (fgets(line, sizeof line, in)) {
        uint8_t wire[EL_WIRE_MAX];
        char *tok[40];
        int n = 0;
        char *save = NULL, *t;
        for (t = strtok_r(line, " \t\r\n", &save); t && n < 40; t = strtok_r(NULL, " \t\r\n", &save))
            tok[n++] = t;
        if (n == 0 || tok[0][0] == '#')
            continue;
        if (strcmp(tok[0], "corrupt") == 0) {
            corrupt_next = 1;
        } else if (strcmp(tok[0], "garbage") == 0 && n == 2) {
            uint8_t g[1024];
            int len = unhex(tok[1], g, sizeof g);
            if (len < 0)
                die("garbage hex");
            emit(g, (size_t)len);
            garbage++;
        } else if (strcmp(tok[0], "reading") == 0 && n == 8) {
            char textbuf[256];
            el_value v = parse_value((unsigned)atoi(tok[6]), tok[7], textbuf);
            send_frame(wire, el_encode_reading(wire, sizeof wire, (uint16_t)atoi(tok[1]),
                                               (uint8_t)atoi(tok[2]), tok[3], tok[4],
                                               strcmp(tok[5], "-") ? tok[5] : "", &v),
                       corrupt_next);
            corrupt_next = 0;
        } else if (strcmp(tok[0], "hello") == 0 && n >= 5) {
            el_channel ch[32];
            int i;
            for (i = 5; i < n && i - 5 < 32; i++) {
                el_channel *c = &ch[i - 5];
                char *slash = strchr(tok[i], '/'), *c1, *c2;
                c1 = slash ? strchr(slash, ':') : NULL;
                c2 = c1 ? strchr(c1 + 1, ':') : NULL;
                if (!c2)
                    die("hello channel SENSOR/METRIC:UNIT:VTYPE");
                *slash = *c1 = *c2 = 0;
                c->sensor = tok[i];
                c->metric = slash + 1;
                c->unit = c1 + 1;
                c->vtype = (uint8_t)atoi(c2 + 1);
            }
            send_frame(wire, el_encode_hello(wire, sizeof wire, (uint16_t)atoi(tok[1]), tok[2],
                                             (uint8_t)atoi(tok[3]), (uint8_t)atoi(tok[4]), ch,
                                             (uint8_t)(n - 5)),
                       corrupt_next);
            corrupt_next = 0;
        } else if (strcmp(tok[0], "attest") == 0 && n == 5) {
            uint8_t sig[255];
            int len = unhex(tok[4], sig, sizeof sig);
            if (len < 0)
                die("signature hex");
            send_frame(wire, el_encode_attest(wire, sizeof wire, (uint16_t)atoi(tok[1]),
                                              (uint8_t)atoi(tok[2]), (uint16_t)atoi(tok[3]),
                                              sig, (uint8_t)len),
                       corrupt_next);
            corrupt_next = 0;
        } else {
            errno = 0;
            die(tok[0]);
        }
    }
}

static void run_generated(long count, const char *hello, const char *sensor,
                          const char *metric, long garbage_every, long corrupt_every)
{
    uint8_t wire[EL_WIRE_MAX];
    uint16_t seq = 0;
    long i;
    if (hello) {
        el_channel ch;
        ch.sensor = sensor;
        ch.metric = metric;
        ch.unit = "";
        ch.vtype = EL_INT32;
        send_frame(wire, el_encode_hello(wire, sizeof wire, seq++, hello, 0, 1, &ch, 1), 0);
    }
    for (i = 0; i < count; i++) {
        el_value v = el_int32((int32_t)i);
        int corrupt = corrupt_every > 0 && (i + 1) % corrupt_every == 0;
        send_frame(wire, el_encode_reading(wire, sizeof wire, seq++, 0, sensor, metric, "", &v),
                   corrupt);
        if (garbage_every > 0 && (i + 1) % garbage_every == 0)
            send_garbage();
    }
}

static void open_tty(const char *path, long baud)
{
    struct termios tio;
    speed_t speed = baud == 9600 ? B9600 : baud == 19200 ? B19200 : baud == 38400 ? B38400
                  : baud == 57600 ? B57600 : baud == 230400 ? B230400 : B115200;
    out_fd = open(path, O_WRONLY | O_NOCTTY);
    if (out_fd < 0)
        die(path);
    if (isatty(out_fd) && tcgetattr(out_fd, &tio) == 0) {
        cfmakeraw(&tio);
        cfsetispeed(&tio, speed);
        cfsetospeed(&tio, speed);
        if (tcsetattr(out_fd, TCSANOW, &tio) != 0)
            die("tcsetattr");
    }
}

int main(int argc, char **argv)
{
    const char *path = NULL, *script = NULL, *hello = NULL;
    const char *sensor = "mcu-1", *metric = "n";
    long baud = 115200, count = -1, garbage_every = 0, corrupt_every = 0;
    int i;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { errno = 0; die(a); }
        if (strcmp(a, "--fd") == 0) out_fd = atoi(v);
        else if (strcmp(a, "--path") == 0) path = v;
        else if (strcmp(a, "--baud") == 0) baud = atol(v);
        else if (strcmp(a, "--script") == 0) script = v;
        else if (strcmp(a, "--count") == 0) count = atol(v);
        else if (strcmp(a, "--hello") == 0) hello = v;
        else if (strcmp(a, "--sensor") == 0) sensor = v;
        else if (strcmp(a, "--metric") == 0) metric = v;
        else if (strcmp(a, "--garbage-every") == 0) garbage_every = atol(v);
        else if (strcmp(a, "--corrupt-every") == 0) corrupt_every = atol(v);
        else if (strcmp(a, "--seed") == 0) rng = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--chunk") == 0) chunk = (size_t)atol(v);
        else if (strcmp(a, "--delay-ms") == 0) delay_ms = atol(v);
        else { errno = 0; die(a); }
        i++;
    }
    if (path)
        open_tty(path, baud);
    if (script) {
        FILE *in = strcmp(script, "-") == 0 ? stdin : fopen(script, "r");
        if (!in)
            die(script);
        run_script(in);
    }
    if (count >= 0)
        run_generated(count, hello, sensor, metric, garbage_every, corrupt_every);
    if (isatty(out_fd))
        tcdrain(out_fd);
    fprintf(stderr, "frames=%lu corrupted=%lu garbage=%lu bytes=%lu\n", frames, corrupted,
            garbage, total);
    return 0;
}
