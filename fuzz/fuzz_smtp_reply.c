/* Fuzz target: everything an SMTP relay can say back to smtp_send (the
 * greeting, EHLO extensions, AUTH challenges, per-recipient replies,
 * multi-line and enhanced-status text, the replies to a pipelined
 * envelope, the reply to the final dot, what a reused connection answers
 * (or its silence, which sends the message again on a new connection) and
 * to RSET) and how smtp_policy reads it.
 *
 * The relay is a loopback socket fed from the input (relay.h): the bytes
 * after the first are what it says. The first byte picks the client
 * side: AUTH, DSN, STARTTLS (the handshake then reads fuzzed bytes), the
 * number of recipients, and whether a kept connection sends a second
 * message. Not the wire order of a real relay; libetpan reads replies as it
 * needs them, which is what matters here. */
#include "log.h"
#include "relay.h"
#include "smtp_client.h"
#include "smtp_policy.h"

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

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
	static struct relay r = { .listen_fd = -1 };
	static const char *const rcpts[] = { "a@x.test", "b@x.test", "c@x.test" };
	static const char msg[] = "From: a@x.test\r\nTo: b@x.test\r\nSubject: s\r\n\r\nbody\r\n.dot\r\n";
	uint8_t opt;
	struct smtp_params p = { .host = "127.0.0.1", .tls = TLS_MODE_NONE, .tls_verify = true, .timeout = 2 };
	struct smtp_envelope env = { .mail_from = "bounce@x.test", .rcpts = rcpts, .envid = "job1" };
	struct smtp_conn *conn = NULL;
	struct smtp_result res;

	if (r.listen_fd < 0) {
		signal(SIGPIPE, SIG_IGN);
		log_set_level(LOG_LVL_ERROR);
		if (relay_listen(&r) < 0)
			return 0;
	}
	if (size < 1)
		return 0;
	opt = data[0];
	p.port = r.port;
	if (opt & 1) {
		p.user = "user";
		p.password = "secret";
	}
	env.dsn = (opt & 2) != 0;
	if (opt & 4)
		p.tls = TLS_MODE_STARTTLS;
	env.n_rcpts = 1 + (opt >> 3) % 3;

	if (relay_start(&r, data + 1, size - 1) < 0)
		return 0;
	smtp_send(&conn, &p, &env, msg, sizeof(msg) - 1, NULL, NULL, &res);
	check_result(&res, env.n_rcpts);
	smtp_result_clear(&res);
	if (conn && (opt & 0x40)) {
		/* the kept connection: a second transaction (or RSET) */
		smtp_send(&conn, &p, &env, msg, sizeof(msg) - 1, NULL, NULL, &res);
		check_result(&res, env.n_rcpts);
		smtp_result_clear(&res);
	}
	smtp_conn_close(conn);
	relay_stop(&r);
	return 0;
}
