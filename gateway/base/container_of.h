/*
 * container_of: from a pointer to a member back to the struct holding it
 * (STYLE rule 13: codecs embed a base struct and recover themselves).
 *
 * The member's type is checked against the pointer at compile time, so a
 * wrong member name or a pointer of another type is an error, not a silent
 * miscast. `ptr` must point to the `member` of a live `type`.
 */
#ifndef SLUICE_CONTAINER_OF_H
#define SLUICE_CONTAINER_OF_H

#include <stddef.h>

#define container_of(ptr, type, member)                                                            \
    ((type *)(void *)((char *)(ptr)-offsetof(type, member) +                                       \
                      0 * sizeof(&((type *)0)->member == (ptr))))

#endif
