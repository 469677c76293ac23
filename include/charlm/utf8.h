/* utf8: strict UTF-8 decoding and encoding (RFC 3629: no overlongs, no surrogates, <= U+10FFFF). */
#ifndef CHARLM_UTF8_H
#define CHARLM_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Decodes one code point from s[0..n). On success stores it in *cp and returns the number of
 * bytes used (1..4). Returns 0 when the sequence is invalid and -1 when it is valid so far but
 * truncated (n too small): a streaming caller then reads more bytes before deciding. */
int utf8_decode(uint32_t *cp, const unsigned char *s, size_t n);

/* Encodes cp into out (room for 4 bytes); returns the byte count (1..4), 0 if cp is invalid. */
int utf8_encode(char *out, uint32_t cp);

#endif
