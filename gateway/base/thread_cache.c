#include "base/thread_cache.h"

#include <stddef.h>

_Thread_local struct thread_cache *thread_cache_registered;

void thread_cache_set(struct thread_cache *tc)
{
    thread_cache_registered = tc;
}
