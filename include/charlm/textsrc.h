/* textsrc: reading UTF-8 text files. A text source is the concatenation of the text files that
 * one or more specs name (a file, a directory or a glob), read in two ways:
 *
 *  - textsrc_open resolves the specs and scans every byte once, in a fixed buffer: strict UTF-8
 *    (errors name the file and byte offset), the code points seen, the characters per file, and
 *    a block index: every TEXTSRC_BLOCK bytes, where a character starts, the byte offset and the
 *    index of that character;
 *  - textsrc_read reads characters [first, first+n) as vocabulary ids through a cursor that keeps
 *    its file open: a read that starts where the last one ended goes on decoding; any other
 *    seeks to the block at or before `first` and decodes from there. Reading a shard therefore
 *    costs the shard plus at most one block, and consecutive reads cost what they return.
 *
 * Resolution. A spec that names a file is that file; a directory is the regular files directly
 * inside it (hidden ".name" entries left out), a glob pattern the regular files it matches; the
 * files of one spec are taken in sorted path order, a file reached twice (symlinks, hard links)
 * once, under its first path. A file is "not text" when its first 8 KiB contain a NUL byte: such
 * a file is skipped in a directory or glob (one note for all) and an error when named.
 *
 * A file must not change between the scan and its reads: opening it for a read compares its
 * size and modification time with the scan's ("FILE: file changed since it was scanned"). */
#ifndef CHARLM_TEXTSRC_H
#define CHARLM_TEXTSRC_H

#include <stddef.h>
#include <stdint.h>

#include "charlm/vocab.h"

#define TEXTSRC_BLOCK ((size_t)1 << 20) /* bytes per read and per block of the index */

/* What textsrc_open does besides resolving and scanning. */
enum {
    TEXTSRC_NOTE_SKIPS = 1, /* print "charlm: note: ROLE: skipped K non-text files ..." per spec */
    TEXTSRC_DIGEST = 2,     /* compute the SHA-256 of each file and of all bytes in order */
};

/* Where a block starts: at a character's first byte. */
typedef struct {
    int64_t at;   /* index in the source of that character */
    int64_t byte; /* its offset in its file */
    int file;
} textsrc_block_t;

typedef struct {
    int nfiles;
    char **paths;        /* (nfiles) in concatenation order; owned */
    int64_t *nbytes;     /* (nfiles) */
    int64_t *nchars;     /* (nfiles) code points per file */
    int64_t *start;      /* (nfiles + 1) index of each file's first character; the last: total */
    int64_t total;       /* characters */
    char (*sha256)[65];  /* (nfiles) hex digest of each file (TEXTSRC_DIGEST), else NULL */
    char sha256_all[65]; /* hex digest of every byte in order (TEXTSRC_DIGEST), else "" */
    int64_t nread;       /* bytes read from the files by textsrc_read so far */
    /* the rest is private to textsrc.c */
    char *role;
    int64_t *mtime;            /* (nfiles) modification times at the scan, ns */
    textsrc_block_t *blocks;   /* (nblocks) in source order */
    size_t nblocks, cap_blocks, cap_files, cap_start;
    int32_t *id_of;            /* (nid) code point -> id, -1 when not in the vocabulary */
    size_t nid;
    int open;                  /* the cursor has a file open: fd, file, buf are valid */
    int fd, file;              /* that file and its index */
    unsigned char *buf;        /* (TEXTSRC_BLOCK) */
    size_t pos, have;          /* next byte, bytes in buf */
    int64_t base;              /* file offset of buf[0] */
    int64_t at;                /* index in the source of the character at buf[pos] */
    int eof;
} textsrc_t;

/* Resolves specs[0..nspecs) (each as above, concatenated in the order given) and scans each file
 * once in bounded memory, ORing every code point into bitmap (VOCAB_BITMAP_WORDS words). `role`
 * names the config key or command for messages ("data.corpus", "eval", "prepare"); flags are
 * TEXTSRC_* bits. Errors (CHARLM_EINPUT, with err_set; ts is then empty): "ROLE is not set" for
 * an empty spec, nothing matches, a file cannot be read, a named file is not text, a directory or
 * glob with no text file, invalid UTF-8 ("FILE: invalid UTF-8 at byte OFFSET"), a spec with no
 * characters ("ROLE: SPEC is empty (0 characters)"). */
int textsrc_open(textsrc_t *ts, uint64_t *bitmap, const char *const *specs, int nspecs,
                 const char *role, int flags);

/* Sets the vocabulary whose ids textsrc_read returns (copied into a table: v may go after). */
void textsrc_set_vocab(textsrc_t *ts, const vocab_t *v);

/* Reads the ids of characters [first, first+n) into ids, through the cursor (above); requires
 * textsrc_set_vocab. Returns CHARLM_OK or CHARLM_EINPUT: a read error, a file changed since the
 * scan, invalid UTF-8 ("FILE: invalid UTF-8 at byte OFFSET", the offset in the file), a character
 * outside the vocabulary ("FILE: character U+XXXX at byte OFFSET is not in the vocabulary"). */
int textsrc_read(int32_t *ids /* (n) */, textsrc_t *ts, int64_t first, int64_t n);

/* Closes the cursor's file and frees everything; ts is then empty, as a zeroed textsrc_t is
 * (closing either is safe). */
void textsrc_close(textsrc_t *ts);

#endif
