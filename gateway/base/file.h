/*
 * file: opening the files a configuration names (certificates, keys, JWKS,
 * htpasswd, API keys, the configuration itself) without ever blocking.
 *
 * Promises: only a regular file is opened. A FIFO would make open(2) wait
 * for a writer for ever (and `sluice -t` and reloads run on the main
 * thread); a directory, socket or device is never a configuration file.
 *
 * Thread: any; no state.
 */
#ifndef SLUICE_FILE_H
#define SLUICE_FILE_H

#include <stdio.h>

/*
 * Opens `path` for reading (binary), or returns NULL with errno set:
 * EISDIR for a directory, ENXIO for anything else that is not a regular file
 * (FIFO, socket, device), else open(2)'s errno.
 */
FILE *file_open_regular(const char *path);

/* What a file_open_regular errno means, for an error message. */
const char *file_strerror(int errnum);

#endif
