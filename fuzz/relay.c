#include "relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

int
relay_listen(struct relay *r)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 4) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
		perror("relay: listen");
		if (fd >= 0)
			close(fd);
		return -1;
	}
	r->listen_fd = fd;
	r->port = ntohs(a.sin_port);
	return 0;
}

static void *
relay_main(void *arg)
{
	struct relay *r = arg;
	char sink[4096];

	for (bool first = true; !atomic_load(&r->done); first = false) {
		int fd = accept(r->listen_fd, NULL, NULL);
		if (fd < 0)
			break;
		for (size_t off = 0; first && off < r->size;) {
			ssize_t n = send(fd, r->data + off, r->size - off, MSG_NOSIGNAL);
			if (n <= 0)
				break;
			off += (size_t)n;
		}
		shutdown(fd, SHUT_WR);
		while (first && read(fd, sink, sizeof(sink)) > 0)
			;
		close(fd);
	}
	return NULL;
}

int
relay_start(struct relay *r, const uint8_t *data, size_t size)
{
	r->data = data;
	r->size = size;
	atomic_store(&r->done, false);
	return pthread_create(&r->thread, NULL, relay_main, r) == 0 ? 0 : -1;
}

void
relay_stop(struct relay *r)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(r->port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	/* the thread may be in accept(): a last connection lets it see done */
	atomic_store(&r->done, true);
	if (fd >= 0) {
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
			perror("relay: connect");
		close(fd);
	}
	pthread_join(r->thread, NULL);
}
