/* slowsync.so: an LD_PRELOAD shim that makes fsync() and fdatasync() wait
 * SLOWSYNC_US microseconds (default 3000) first, to see how mailbridge
 * behaves on a disk slower than this machine's (~0.3 ms per fdatasync):
 *   cc -shared -fPIC -O2 -o /tmp/slowsync.so bench/tools/slowsync.c -ldl
 *   SLOWSYNC_US=3000 bench/outbound.py 3000 --preload /tmp/slowsync.so */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>
static unsigned delay_us(void) { const char *s = getenv("SLOWSYNC_US"); return s ? (unsigned)atoi(s) : 3000; }
int fdatasync(int fd) { static int (*real)(int); if (!real) real = dlsym(RTLD_NEXT, "fdatasync"); usleep(delay_us()); return real(fd); }
int fsync(int fd) { static int (*real)(int); if (!real) real = dlsym(RTLD_NEXT, "fsync"); usleep(delay_us()); return real(fd); }
