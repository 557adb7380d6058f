/*
 * Host tests of the C library: the shared vectors (decoded byte by byte, and every
 * valid frame re-encoded from its parsed fields to the same bytes), the CRC check
 * value, COBS edge cases, encoder argument checks, and a resync property over
 * seeded random garbage between frames. Built by `make -C firmware_bridge test`
 * with -Wall -Wextra -Werror and the address and undefined-behaviour sanitizers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgeledger_frame.h"
#include "render.h"
#include "vectors.h"

static int failures, checks;

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        checks++;                                                            \
        if (!(cond)) {                                                       \
            failures++;                                                      \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);             \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
        }                                                                    \
    } while (0)

static void test_crc(void)
{
    const uint8_t check[] = "123456789";
    uint8_t frame[13];
    uint32_t crc = el_crc32c(0, check, 9);
    CHECK(crc == 0xE3069283UL, "crc32c check value %08lx", (unsigned long)crc);
    CHECK(el_crc32c(el_crc32c(0, check, 4), check + 4, 5) == crc, "crc32c chaining");
    memcpy(frame, check, 9);
    frame[9] = (uint8_t)crc;
    frame[10] = (uint8_t)(crc >> 8);
    frame[11] = (uint8_t)(crc >> 16);
    frame[12] = (uint8_t)(crc >> 24);
    CHECK((uint32_t)~el_crc32c(0, frame, 13) == 0xB798B438UL, "crc32c residue");
}

static void test_cobs(void)
{
    uint8_t in[300], out[310];
    size_t n;
    memset(in, 1, sizeof in);
    n = el_cobs_encode(in, 254, out, sizeof out);
    CHECK(n == 255 && out[0] == 0xFF, "254 ones: one full block, %zu bytes", n);
    n = el_cobs_encode(in, 255, out, sizeof out);
    CHECK(n == 257 && out[255] == 2, "255 ones: two blocks, %zu bytes", n);
    in[0] = 0;
    n = el_cobs_encode(in, 1, out, sizeof out);
    CHECK(n == 2 && out[0] == 1 && out[1] == 1, "one zero");
    n = el_cobs_encode(in, 0, out, sizeof out);
    CHECK(n == 1 && out[0] == 1, "empty");
    CHECK(el_cobs_encode(in, 10, out, 5) == 0, "too small an output");
}

static void feed_vector(const vector *v)
{
    el_decoder d;
    uint8_t buf[EL_FRAME_MAX];
    char line[1024];
    size_t i, k = 0;
    el_decoder_init(&d, buf, sizeof buf);
    for (i = 0; i < v->wire_len; i++) {
        if (!el_feed_render(&d, v->wire[i], line, sizeof line))
            continue;
        CHECK(v->expect[k] != NULL, "%s: unexpected outcome %s", v->name, line);
        if (v->expect[k] == NULL)
            return;
        CHECK(strcmp(line, v->expect[k]) == 0, "%s: outcome %zu\n  got  %s\n  want %s",
              v->name, k, line, v->expect[k]);
        k++;
    }
    CHECK(v->expect[k] == NULL, "%s: missing outcome %s", v->name, v->expect[k]);
}

/* Copy an el_str into a NUL-terminated string. */
static const char *cstr(char *dst, el_str s)
{
    memcpy(dst, s.p, s.len);
    dst[s.len] = 0;
    return dst;
}

/* Parse a valid raw frame, encode it again from its fields, compare the bytes. */
static void reencode(const char *name, const uint8_t *raw, size_t len)
{
    uint8_t out[EL_WIRE_MAX], expect[EL_WIRE_MAX];
    char a[70], b[70], c[40], fw[40];
    el_channel ch[16];
    char chs[16][3][70];
    el_frame f;
    size_t n = 0;
    uint8_t i;
    CHECK(el_parse(raw, len, &f) == EL_FRAME_OK, "%s: parse", name);
    if (f.type == EL_READING) {
        el_value v = f.u.reading.value;
        if (v.vtype == EL_FLOAT64)
            memcpy(&v.as.f64, v.raw, 8);
        n = el_encode_reading(out, sizeof out, f.seq, f.u.reading.flags,
                              cstr(a, f.u.reading.sensor), cstr(b, f.u.reading.metric),
                              cstr(c, f.u.reading.unit), &v);
    } else if (f.type == EL_HELLO) {
        for (i = 0; i < f.u.hello.count && i < 16; i++) {
            el_channel_view view;
            el_hello_channel(&f, i, &view);
            ch[i].sensor = cstr(chs[i][0], view.sensor);
            ch[i].metric = cstr(chs[i][1], view.metric);
            ch[i].unit = cstr(chs[i][2], view.unit);
            ch[i].vtype = view.vtype;
        }
        n = el_encode_hello(out, sizeof out, f.seq, cstr(fw, f.u.hello.firmware),
                            f.u.hello.part, f.u.hello.parts, ch, f.u.hello.count);
    } else {
        n = el_encode_attest(out, sizeof out, f.seq, f.u.attest.alg, f.u.attest.signed_seq,
                             f.u.attest.signature.p, f.u.attest.signature.len);
    }
    expect[0] = 0;
    CHECK(el_cobs_encode(raw, len, expect + 1, sizeof expect - 2) == len + 1, "%s: cobs", name);
    expect[len + 2] = 0;
    CHECK(n == len + 3 && memcmp(out, expect, n) == 0, "%s: re-encoded bytes differ", name);
}

static void test_vectors(void)
{
    size_t i, k, off;
    for (i = 0; i < N_VECTORS; i++) {
        feed_vector(&VECTORS[i]);
        for (k = 0, off = 0; k < VECTORS[i].n_raw; off += VECTORS[i].raw_lens[k++])
            reencode(VECTORS[i].name, VECTORS[i].raw + off, VECTORS[i].raw_lens[k]);
    }
}

static void test_encoder_rejects(void)
{
    uint8_t out[EL_WIRE_MAX], sig[64] = {0};
    el_value v = el_float32(1.0f), nan = el_float64(0.0), text = el_text("\xc3\x28");
    el_channel bad = {"s", "m", "", 9};
    double zero = 0.0;
    nan.as.f64 = zero / zero;
    CHECK(el_encode_reading(out, sizeof out, 0, 0, "bme 280", "t", "", &v) == 0, "bad id");
    CHECK(el_encode_reading(out, sizeof out, 0, 0, "", "t", "", &v) == 0, "empty id");
    CHECK(el_encode_reading(out, sizeof out, 0, 0, "a", "t", "m s", &v) == 0, "unit space");
    CHECK(el_encode_reading(out, sizeof out, 0, 2, "a", "t", "", &v) == 0, "reserved flag");
    CHECK(el_encode_reading(out, sizeof out, 0, 0, "a", "t", "", &nan) == 0, "NaN");
    CHECK(el_encode_reading(out, sizeof out, 0, 0, "a", "t", "", &text) == 0, "bad UTF-8");
    CHECK(el_encode_reading(out, 20, 0, 0, "a", "temperature", "Cel", &v) == 0, "small buffer");
    CHECK(el_encode_reading(out, 21, 0, 0, "a", "b", NULL, &v) == 0, "one byte short");
    CHECK(el_encode_reading(out, 22, 0, 0, "a", "b", NULL, &v) == 22, "exact buffer");
    CHECK(el_encode_hello(out, sizeof out, 0, "fw", 0, 1, &bad, 1) == 0, "bad channel vtype");
    CHECK(el_encode_hello(out, sizeof out, 0, "fw", 1, 1, NULL, 0) == 0, "part >= parts");
    CHECK(el_encode_attest(out, sizeof out, 0, 2, 0, sig, 64) == 0, "unknown alg");
    CHECK(el_encode_attest(out, sizeof out, 0, 1, 0, sig, 63) == 0, "short signature");
}

/* The resync property: frames with seeded random garbage between them (each frame
 * with its own delimiters) all come out, in order, byte by byte. */
static uint32_t lcg(uint32_t *s)
{
    *s = *s * 1664525UL + 1013904223UL;
    return *s >> 8;
}

static void test_resync(void)
{
    static uint8_t stream[1 << 16];
    uint8_t buf[EL_FRAME_MAX];
    uint32_t seed = 12345, round;
    for (round = 0; round < 200; round++) {
        el_decoder d;
        el_frame f;
        size_t len = 0, i;
        uint16_t seq, sent = 0, got = 0;
        for (seq = 0; seq < 20; seq++) {
            el_value v = el_int32((int32_t)lcg(&seed));
            size_t g = lcg(&seed) % 60, n;
            for (i = 0; i < g; i++)
                stream[len++] = (uint8_t)lcg(&seed);
            if (lcg(&seed) % 7 == 0) {  /* an overlong run with no delimiter */
                for (i = 0; i < 300; i++)
                    stream[len++] = (uint8_t)(1 + lcg(&seed) % 255);
            }
            n = el_encode_reading(stream + len, sizeof stream - len, seq, 0, "mcu-1", "n", "",
                                  &v);
            CHECK(n > 0, "encode");
            len += n;
            sent++;
        }
        el_decoder_init(&d, buf, sizeof buf);
        for (i = 0; i < len; i++) {
            el_status s = el_decoder_feed(&d, stream[i]);
            if (s == EL_FRAME_OK && el_parse(d.buf, d.len, &f) == EL_FRAME_OK
                && f.type == EL_READING && f.seq == got)
                got++;
        }
        CHECK(got == sent, "round %lu: %u of %u frames recovered in order",
              (unsigned long)round, got, sent);
    }
}

int main(void)
{
    test_crc();
    test_cobs();
    test_vectors();
    test_encoder_rejects();
    test_resync();
    printf("%d checks, %d failures, %d vectors\n", checks, failures, N_VECTORS);
    return failures ? 1 : 0;
}
