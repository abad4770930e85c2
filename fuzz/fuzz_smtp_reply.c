/* Fuzz target: everything an SMTP relay can say back to smtp_send (the
 * greeting, EHLO extensions, AUTH challenges, per-recipient replies,
 * multi-line and enhanced-status text, the reply to the final dot, what a
 * reused connection answers to NOOP and RSET) and how smtp_policy reads it.
 *
 * The relay is a loopback socket fed from the input: the bytes after the
 * first are written at once and the write side shut, so a relay that says
 * too little ends in EOF, never a timeout. The first byte picks the client
 * side: AUTH, DSN, STARTTLS (the handshake then reads fuzzed bytes), the
 * number of recipients, and whether a kept connection sends a second
 * message. Not the wire order of a real relay; libetpan reads replies as it
 * needs them, which is what matters here. */
#include "log.h"
#include "smtp_client.h"
#include "smtp_policy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

struct relay {
	int listen_fd;
	const uint8_t *data;
	size_t size;
	atomic_bool done;
};

/* Serves the input to the first connection; a reconnection (smtp_send
 * dropping a kept connection that failed NOOP) is closed at once, so it
 * ends in EOF rather than a wait for a greeting. Ends at the connection
 * the fuzz loop makes after setting done. */
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

static void
relay_stop(struct relay *r, pthread_t t, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	atomic_store(&r->done, true);
	if (fd >= 0) {
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
			perror("fuzz_smtp_reply: connect");
		close(fd);
	}
	pthread_join(t, NULL);
}

static int
relay_listen(int *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 4) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
		perror("fuzz_smtp_reply: listen");
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(a.sin_port);
	return fd;
}

static void
check_result(const struct smtp_result *res, size_t n)
{
	const struct smtp_reply *why;
	for (size_t i = 0; i < n; i++) {
		enum smtp_outcome o = smtp_policy_rcpt(res, i, &why);
		/* a recipient is never "sent" unless the whole message was */
		if (o == SMTP_OUT_SENT && res->failed_at != SMTP_DONE)
			__builtin_trap();
		(void)why;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int listen_fd = -1, port;
	static const char *const rcpts[] = { "a@x.test", "b@x.test", "c@x.test" };
	static const char msg[] = "From: a@x.test\r\nTo: b@x.test\r\nSubject: s\r\n\r\nbody\r\n.dot\r\n";
	struct relay r;
	pthread_t t;
	uint8_t opt;
	struct smtp_params p = { .host = "127.0.0.1", .tls = TLS_MODE_NONE, .tls_verify = true, .timeout = 2 };
	struct smtp_envelope env = { .mail_from = "bounce@x.test", .rcpts = rcpts, .envid = "job1" };
	struct smtp_conn *conn = NULL;
	struct smtp_result res;

	if (listen_fd < 0) {
		signal(SIGPIPE, SIG_IGN);
		log_set_level(LOG_LVL_ERROR);
		if ((listen_fd = relay_listen(&port)) < 0)
			return 0;
	}
	if (size < 1)
		return 0;
	opt = data[0];
	r = (struct relay){ listen_fd, data + 1, size - 1, false };
	p.port = port;
	if (opt & 1) {
		p.user = "user";
		p.password = "secret";
	}
	env.dsn = (opt & 2) != 0;
	if (opt & 4)
		p.tls = TLS_MODE_STARTTLS;
	env.n_rcpts = 1 + (opt >> 3) % 3;

	if (pthread_create(&t, NULL, relay_main, &r) != 0)
		return 0;
	smtp_send(&conn, &p, &env, msg, sizeof(msg) - 1, NULL, NULL, &res);
	check_result(&res, env.n_rcpts);
	smtp_result_clear(&res);
	if (conn && (opt & 0x40)) {
		/* the kept connection: NOOP, then a second transaction (or RSET) */
		smtp_send(&conn, &p, &env, msg, sizeof(msg) - 1, NULL, NULL, &res);
		check_result(&res, env.n_rcpts);
		smtp_result_clear(&res);
	}
	smtp_conn_close(conn);
	relay_stop(&r, t, port);
	return 0;
}
