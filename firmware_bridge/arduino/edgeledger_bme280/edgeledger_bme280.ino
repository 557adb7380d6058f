/*
 * edgeledger_bme280: a BME280 on I2C, reported to an EdgeLedger gateway over USB
 * serial in the `framed` protocol (firmware_bridge/PROTOCOL.md).
 *
 * Boards: any Arduino core (Uno/Nano AVR, Nano Every, RP2040, ESP32, SAMD).
 * Libraries (Library Manager): "Adafruit BME280 Library" (and its dependency
 * "Adafruit Unified Sensor"). Optional attestation: "Crypto" by Rhys Weatherley
 * (rweather/arduinolibs), on a 32-bit board (Ed25519 signing takes seconds on AVR).
 *
 * The protocol library is vendored into this folder, not linked (the Arduino build
 * compiles every .c file in the sketch folder). From the repository root:
 *     make -C firmware_bridge arduino-vendor
 * which copies firmware_bridge/c/edgeledger_frame.h and .c here (plain copies; do
 * not symlink, the Arduino IDE does not follow them everywhere). Copy them again
 * whenever the library changes.
 *
 * Wiring: BME280 VIN to 3V3 (or 5V on breakout boards with a regulator), GND, SDA,
 * SCL. The gateway profile: hw_configs/pi4-bme280-framed.toml (baud 115200).
 *
 * What goes on the wire: a HELLO at boot (seq 0) and every HELLO_EVERY_MS, then
 * every READ_EVERY_MS three READING frames, float32: bme280-1/temperature (Cel),
 * bme280-1/humidity (%RH), bme280-1/pressure (Pa). A reading the sensor cannot
 * give (NaN, e.g. a loose wire) is not sent: the gateway never signs NaN.
 */
#include <Wire.h>
#include <Adafruit_BME280.h>

#include "edgeledger_frame.h"

/* Uncomment on a 32-bit board with the Crypto library to sign every reading. */
/* #define EDGELEDGER_ATTEST 1 */
#ifdef EDGELEDGER_ATTEST
#include <Ed25519.h>
/* The firmware key: provision per device (e.g. from EEPROM or a secure element);
 * the gateway and auditors need its public half to check the readings' `a` field. */
static uint8_t fw_private_key[32];
static uint8_t fw_public_key[32];
#endif

static const char SENSOR_ID[] = "bme280-1";
static const char FIRMWARE[] = "edgeledger-bme280/1.0.0";
static const unsigned long READ_EVERY_MS = 1000;
static const unsigned long HELLO_EVERY_MS = 60000;
static const long BAUD = 115200;

static Adafruit_BME280 bme;
static uint16_t seq = 0;                 /* frame counter, 0 at boot, every frame */
static uint8_t out[128];                 /* one frame at a time; the HELLO is 109 bytes on the wire */
static unsigned long last_read, last_hello;

static const el_channel CHANNELS[] = {
    {SENSOR_ID, "temperature", "Cel", EL_FLOAT32},
    {SENSOR_ID, "humidity", "%RH", EL_FLOAT32},
    {SENSOR_ID, "pressure", "Pa", EL_FLOAT32},
};

static void send_hello(void)
{
    size_t n = el_encode_hello(out, sizeof out, seq, FIRMWARE, 0, 1, CHANNELS,
                               (uint8_t)(sizeof CHANNELS / sizeof CHANNELS[0]));
    if (n) {
        Serial.write(out, n);
        seq++;
    }
}

static void send_reading(const char *metric, const char *unit, float value)
{
    el_value v;
    if (isnan(value) || isinf(value))
        return;
    v = el_float32(value);
#ifdef EDGELEDGER_ATTEST
    {
        uint8_t sig[64];
        uint16_t signed_seq = seq;
        size_t raw = el_build_reading(out, sizeof out, seq, EL_FLAG_ATTEST, SENSOR_ID, metric,
                                      unit, &v);
        size_t n;
        if (!raw)
            return;
        /* Sign the frame's raw bytes (header to CRC), before COBS. */
        Ed25519::sign(sig, fw_private_key, fw_public_key, out + EL_RAW_OFFSET, raw);
        n = el_seal(out, sizeof out, raw);
        Serial.write(out, n);
        seq++;
        n = el_encode_attest(out, sizeof out, seq, EL_ALG_ED25519, signed_seq, sig, 64);
        if (n) {
            Serial.write(out, n);
            seq++;
        }
    }
#else
    {
        size_t n = el_encode_reading(out, sizeof out, seq, 0, SENSOR_ID, metric, unit, &v);
        if (n) {
            Serial.write(out, n);
            seq++;
        }
    }
#endif
}

void setup()
{
    Serial.begin(BAUD);
    while (!Serial && millis() < 3000) {
        /* native USB boards: wait a little for the host to open the port */
    }
    Wire.begin();
#ifdef EDGELEDGER_ATTEST
    /* Placeholder provisioning: derive the public key from a stored private key. */
    Ed25519::derivePublicKey(fw_public_key, fw_private_key);
#endif
    while (!bme.begin(0x76) && !bme.begin(0x77)) {
        /* no sensor: nothing to report (a HELLO with no reading would mislead) */
        delay(1000);
    }
    /* Weather-station settings from the datasheet: forced mode, 1x oversampling. */
    bme.setSampling(Adafruit_BME280::MODE_FORCED, Adafruit_BME280::SAMPLING_X1,
                    Adafruit_BME280::SAMPLING_X1, Adafruit_BME280::SAMPLING_X1,
                    Adafruit_BME280::FILTER_OFF);
    send_hello();
    last_hello = last_read = millis();
}

void loop()
{
    unsigned long now = millis();
    if (now - last_hello >= HELLO_EVERY_MS) {
        last_hello = now;
        send_hello();
    }
    if (now - last_read >= READ_EVERY_MS) {
        last_read = now;
        if (bme.takeForcedMeasurement()) {
            send_reading("temperature", "Cel", bme.readTemperature());
            send_reading("humidity", "%RH", bme.readHumidity());
            send_reading("pressure", "Pa", bme.readPressure());
        }
    }
}
