/*
 * edgeledger_frame: the EdgeLedger `framed` UART protocol, version 1
 * (firmware_bridge/PROTOCOL.md), for microcontrollers and hosts.
 *
 * Portable C99: no heap, nothing from libc but string.h and stdint.h (and
 * stddef.h for size_t), every buffer provided by the caller. Fits an 8-bit AVR:
 * the CRC is computed bit by bit, frames are encoded in place in one buffer of
 * EL_WIRE_MAX bytes or less, and `double` may be 32 bits wide (avr-gcc): float64
 * values are then widened from binary32 exactly.
 *
 * Sending (MCU side):
 *     uint8_t out[64];
 *     el_value v = el_float32(21.5f);
 *     size_t n = el_encode_reading(out, sizeof out, seq++, 0,
 *                                  "bme280-1", "temperature", "Cel", &v);
 *     if (n) Serial.write(out, n);
 * To attest a frame, build it, sign the raw bytes, then seal it:
 *     size_t raw = el_build_reading(out, sizeof out, seq, EL_FLAG_ATTEST, ...);
 *     sign(out + EL_RAW_OFFSET, raw, sig);
 *     n = el_seal(out, sizeof out, raw);            (then an ATTEST frame)
 *
 * Receiving (gateway side, or host tools), one byte at a time:
 *     el_decoder d; uint8_t buf[EL_FRAME_MAX];
 *     el_decoder_init(&d, buf, sizeof buf);
 *     el_status s = el_decoder_feed(&d, byte);
 *     if (s == EL_FRAME_OK) s = el_parse(d.buf, d.len, &frame);
 *     if (s >= EL_ERR_FIRST) report(s, d.number, d.offset);
 */
#ifndef EDGELEDGER_FRAME_H
#define EDGELEDGER_FRAME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EL_VERSION 1
#define EL_FRAME_MIN 8      /* header (4) + CRC (4) */
#define EL_FRAME_MAX 254    /* decoded frame, header to CRC */
#define EL_CHUNK_MAX 256    /* encoded bytes between two delimiters */
#define EL_WIRE_MAX (EL_FRAME_MAX + 3) /* 0x00, one COBS code, frame, 0x00 */
#define EL_RAW_OFFSET 2     /* where el_build_* put the raw frame in `out` */
#define EL_ID_MAX 64
#define EL_UNIT_MAX 32
#define EL_FIRMWARE_MAX 32
#define EL_TEXT_MAX 64
#define EL_FLAG_ATTEST 0x01
#define EL_ALG_ED25519 1
#define EL_ED25519_SIG 64

typedef enum { EL_READING = 1, EL_HELLO = 2, EL_ATTEST = 3 } el_type;

typedef enum {
    EL_INT32 = 1, EL_INT64 = 2, EL_FLOAT32 = 3, EL_FLOAT64 = 4, EL_BOOL = 5, EL_TEXT = 6
} el_vtype;

/* What the decoder and the parser report. Faults are numbered from EL_ERR_FIRST,
 * in the order PROTOCOL.md section 1 checks them. */
typedef enum {
    EL_NONE = 0,        /* byte taken, nothing complete yet */
    EL_FRAME_OK = 1,    /* a frame with a good CRC is in d.buf[0 .. d.len) */
    EL_ERR_FIRST = 16,
    EL_ERR_OVERLONG = 16,
    EL_ERR_COBS = 17,
    EL_ERR_SHORT = 18,
    EL_ERR_CRC = 19,
    EL_ERR_VERSION = 20,
    EL_ERR_TYPE = 21,
    EL_ERR_BODY = 22,
    EL_ERR_ARG = 23     /* encoder: a bad argument or a buffer too small */
} el_status;

/* A string inside a frame: not NUL-terminated. */
typedef struct {
    const uint8_t *p;
    uint8_t len;
} el_str;

typedef struct {
    uint8_t vtype;      /* el_vtype */
    union {
        int32_t i32;
        int64_t i64;
        float f32;
        double f64;     /* on a 32-bit-double target: encoded as the binary64 of it */
        uint8_t b;
        struct { const char *p; uint8_t len; } text;
    } as;
    uint8_t raw[8];     /* decoder: the value's bytes as sent (not for text) */
} el_value;

el_value el_int32(int32_t v);
el_value el_int64(int64_t v);
el_value el_float32(float v);
el_value el_float64(double v);
el_value el_bool(int v);
el_value el_text(const char *s); /* NUL-terminated, at most EL_TEXT_MAX bytes */

/* One channel of a HELLO: sensor, metric, unit ("" or NULL for none), vtype. */
typedef struct {
    const char *sensor;
    const char *metric;
    const char *unit;
    uint8_t vtype;
} el_channel;

/* A parsed frame; its strings point into the buffer it was parsed from. */
typedef struct {
    uint8_t version;
    uint8_t type;
    uint16_t seq;
    union {
        struct {
            uint8_t flags;
            el_str sensor, metric, unit;
            el_value value;     /* text: value.as.text points into the frame */
        } reading;
        struct {
            el_str firmware;
            uint8_t part, parts, count;
            const uint8_t *channels;    /* read them with el_hello_channel */
            size_t channels_len;
        } hello;
        struct {
            uint8_t alg;
            uint16_t signed_seq;
            el_str signature;
        } attest;
    } u;
} el_frame;

typedef struct {
    el_str sensor, metric, unit;
    uint8_t vtype;
} el_channel_view;

/* CRC-32C (width=32 poly=0x1edc6f41 init=0xffffffff refin refout xorout=0xffffffff,
 * check 0xe3069283). Start with crc = 0 and chain calls: el_crc32c(el_crc32c(0,a),b). */
uint32_t el_crc32c(uint32_t crc, const uint8_t *p, size_t n);

/* COBS-encode n bytes into out (cap bytes); the encoded length, or 0 if it does not
 * fit. No delimiter is written. */
size_t el_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);

/* Build a frame's raw bytes (header, body, CRC) at out + EL_RAW_OFFSET: their
 * length, or 0 when an argument is invalid or cap is too small (cap must leave
 * room for the wire form: raw length + 3). */
size_t el_build_reading(uint8_t *out, size_t cap, uint16_t seq, uint8_t flags,
                        const char *sensor, const char *metric, const char *unit,
                        const el_value *value);
size_t el_build_hello(uint8_t *out, size_t cap, uint16_t seq, const char *firmware,
                      uint8_t part, uint8_t parts, const el_channel *channels,
                      uint8_t count);
size_t el_build_attest(uint8_t *out, size_t cap, uint16_t seq, uint8_t alg,
                       uint16_t signed_seq, const uint8_t *signature, uint8_t sig_len);

/* Turn a built frame (raw_len bytes at out + EL_RAW_OFFSET) into its wire form in
 * place, 0x00 COBS 0x00 from out[0]: the wire length (raw_len + 3), or 0. */
size_t el_seal(uint8_t *out, size_t cap, size_t raw_len);

/* Build and seal: the number of bytes to send from out[0], or 0. */
size_t el_encode_reading(uint8_t *out, size_t cap, uint16_t seq, uint8_t flags,
                         const char *sensor, const char *metric, const char *unit,
                         const el_value *value);
size_t el_encode_hello(uint8_t *out, size_t cap, uint16_t seq, const char *firmware,
                       uint8_t part, uint8_t parts, const el_channel *channels,
                       uint8_t count);
size_t el_encode_attest(uint8_t *out, size_t cap, uint16_t seq, uint8_t alg,
                        uint16_t signed_seq, const uint8_t *signature, uint8_t sig_len);

/* The incremental decoder. Fields are read-only for the caller. */
typedef struct {
    uint8_t *buf;           /* caller's buffer, at least EL_FRAME_MAX bytes */
    size_t len;             /* decoded bytes of the current chunk */
    uint16_t enc_len;       /* encoded bytes of the current chunk */
    uint8_t code, left;     /* COBS: the current block's code, data bytes still due */
    uint8_t discarding;     /* an overlong chunk is being skipped to the next 0x00 */
    uint8_t too_long;       /* decoded more than EL_FRAME_MAX bytes */
    uint32_t pos;           /* stream offset of the next byte */
    uint32_t chunk_offset;  /* stream offset of the current chunk's first byte */
    uint32_t chunks;        /* non-empty chunks seen so far */
    uint32_t number;        /* the last reported frame attempt: its number ... */
    uint32_t offset;        /* ... and the stream offset of its first byte */
} el_decoder;

/* 0, or EL_ERR_ARG when cap < EL_FRAME_MAX. */
int el_decoder_init(el_decoder *d, uint8_t *buf, size_t cap);

/* Take one byte: EL_NONE, EL_FRAME_OK (d->buf, d->len hold a frame whose CRC
 * is good), or a fault (EL_ERR_OVERLONG, _COBS, _SHORT, _CRC). d->number and
 * d->offset say which frame attempt it was. */
el_status el_decoder_feed(el_decoder *d, uint8_t byte);

/* Check and parse a frame that el_decoder_feed returned: EL_FRAME_OK, or
 * EL_ERR_VERSION, EL_ERR_TYPE, EL_ERR_BODY. */
el_status el_parse(const uint8_t *frame, size_t len, el_frame *out);

/* Channel i (< count) of a parsed HELLO; 0 on success. */
int el_hello_channel(const el_frame *f, uint8_t i, el_channel_view *out);

/* A short name for a status ("crc", "cobs", ...), as PROTOCOL.md spells it. */
const char *el_status_name(el_status s);

#ifdef __cplusplus
}
#endif

#endif
