/* relay: a loopback server for fuzz targets whose input is what a remote
 * server says. The input is written at once to the first connection and
 * the write side shut, so a server that says too little ends in EOF, never
 * a timeout; later connections (a client reconnecting) are closed at once. */
#ifndef MB_FUZZ_RELAY_H
#define MB_FUZZ_RELAY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct relay {
	int listen_fd;
	int port;
	const uint8_t *data;
	size_t size;
	atomic_bool done;
	pthread_t thread;
};

/* Once per process: listens on 127.0.0.1, an ephemeral port. 0 or -1. */
int relay_listen(struct relay *r);
/* Per input: serves data (borrowed until relay_stop). 0 or -1. */
int relay_start(struct relay *r, const uint8_t *data, size_t size);
/* Ends the serving thread and waits for it. */
void relay_stop(struct relay *r);

#endif
