#include "base/file.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

FILE *file_open_regular(const char *path)
{
    /* O_NONBLOCK: opening a FIFO without a writer returns at once instead of waiting. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    int e = 0;
    if (fstat(fd, &st) < 0)
        e = errno;
    else if (S_ISDIR(st.st_mode))
        e = EISDIR;
    else if (!S_ISREG(st.st_mode))
        e = ENXIO;
    if (e) {
        close(fd);
        errno = e;
        return NULL;
    }
    /* A regular file never blocks: reads behave as without O_NONBLOCK either way. */
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        (void)fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        e = errno;
        close(fd);
        errno = e;
    }
    return f;
}

const char *file_strerror(int errnum)
{
    if (errnum == ENXIO)
        return "not a regular file (a FIFO, socket or device)";
    return strerror(errnum);
}
