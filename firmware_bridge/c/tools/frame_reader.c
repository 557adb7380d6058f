/*
 * frame_reader: decode a framed-protocol byte stream with the C library, one byte
 * at a time, and print one line per outcome (a frame or a fault) in the format of
 * c/tests/gen_vectors.py `summary`. Reads standard input, or the file or tty given
 * as the only argument. The Python tests pipe Python-encoded streams through it.
 */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "edgeledger_frame.h"
#include "render.h"

int main(int argc, char **argv)
{
    uint8_t buf[EL_FRAME_MAX], in[4096];
    char line[1024];
    el_decoder d;
    ssize_t n, i;
    int fd = argc > 1 ? open(argv[1], O_RDONLY | O_NOCTTY) : 0;
    if (fd < 0) {
        perror(argv[1]);
        return 2;
    }
    el_decoder_init(&d, buf, sizeof buf);
    while ((n = read(fd, in, sizeof in)) > 0) {
        for (i = 0; i < n; i++)
            if (el_feed_render(&d, in[i], line, sizeof line))
                printf("%s\n", line);
    }
    return n < 0 ? 1 : 0;
}
