#include "netstream.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>


struct netstream {
	int fd;
	gnutls_session_t tls;      /* NULL while plain */
	char *resume_key;          /* the server's key in the resumption cache, until its ticket is kept */
	int resume_reads;          /* reads that brought no ticket yet */
	bool smtp_replies;         /* TAB -> SP in what we read (netstream_smtp_replies) */
	bool eof;                  /* the peer closed: reads after that fail */
	struct {                   /* netstream_imap_responses */
		bool on;
		unsigned match;        /* bytes of "[PERMANENTFLAGS" matched so far */
		uint8_t brace;         /* 1 in "{digits", 2 after '}', 3 after "}\r" */
		uint64_t num;          /* the digits of "{N}" */
		uint64_t literal;      /* literal bytes still to pass untouched */
		bool too_big;          /* a literal over NETSTREAM_IMAP_MAX_LITERAL */
	} imap;
};

/* Trust stores are big to parse: one credentials object per CA file (or
 * the system store), shared by every session, kept for the process. */
struct cred_entry {
	char *ca_file;             /* NULL = system */
	gnutls_certificate_credentials_t cred;
	struct cred_entry *next;
};
static pthread_mutex_t cred_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cred_entry *creds;

static gnutls_certificate_credentials_t
cred_get(const char *ca_file, char **error_r)
{
	struct cred_entry *e;
	gnutls_certificate_credentials_t c = NULL;
	int r;

	pthread_mutex_lock(&cred_lock);
	for (e = creds; e; e = e->next)
		if ((!e->ca_file && !ca_file) || (e->ca_file && ca_file && !strcmp(e->ca_file, ca_file))) {
			c = e->cred;
			goto out;
		}
	gnutls_certificate_allocate_credentials(&c);
	r = ca_file ? gnutls_certificate_set_x509_trust_file(c, ca_file, GNUTLS_X509_FMT_PEM) :
	    gnutls_certificate_set_x509_system_trust(c);
	if (r <= 0) {
		*error_r = xasprintf("no trust anchors loaded from %s", ca_file ? ca_file : "the system store");
		gnutls_certificate_free_credentials(c);
		c = NULL;
		goto out;
	}
	e = xcalloc(1, sizeof(*e));
	e->ca_file = xstrdup(ca_file);
	e->cred = c;
	e->next = creds;
	creds = e;
out:
	pthread_mutex_unlock(&cred_lock);
	return c;
}

/* TLS session resumption: the last session each server gave us (a TLS
 * 1.3 ticket, or a 1.2 session), so that the next connection to it skips
 * the key exchange and the certificate chain. A restart's thousands of
 * IMAP logins to one server cost it one full handshake, not one each.
 * Kept per host, port, CA file and verify flag: a session is only offered
 * to the server, and under the trust, that verified it; a server that
 * cannot take it does a full, verified handshake instead. */
#define RESUME_MAX 256
#define RESUME_READS 8
struct resume_entry {
	char *key;
	gnutls_datum_t data;
};
static pthread_mutex_t resume_lock = PTHREAD_MUTEX_INITIALIZER;
static struct resume_entry resumes[RESUME_MAX];
static size_t n_resumes, resume_next;   /* resume_next: the slot a new server replaces when full */

static char *
resume_key(const char *host, int port, const struct netstream_tls *t)
{
	return xasprintf("%s|%d|%s|%d", host, port, t->ca_file ? t->ca_file : "", t->verify ? 1 : 0);
}

/* Offers the session kept for key, if any. */
static void
resume_offer(gnutls_session_t tls, const char *key)
{
	pthread_mutex_lock(&resume_lock);
	for (size_t i = 0; i < n_resumes; i++)
		if (!strcmp(resumes[i].key, key)) {
			gnutls_session_set_data(tls, resumes[i].data.data, resumes[i].data.size);
			break;
		}
	pthread_mutex_unlock(&resume_lock);
}

/* Keeps tls's session for key once it can be resumed (a TLS 1.3 ticket
 * comes after the handshake, with the first data): true when kept. */
static bool
resume_keep(gnutls_session_t tls, const char *key)
{
	gnutls_datum_t d = { NULL, 0 };
	size_t i;

	if (gnutls_protocol_get_version(tls) == GNUTLS_TLS1_3 &&
	    !(gnutls_session_get_flags(tls) & GNUTLS_SFLAGS_SESSION_TICKET))
		return false;
	if (gnutls_session_get_data2(tls, &d) < 0 || d.size == 0) {
		gnutls_free(d.data);
		return false;
	}
	pthread_mutex_lock(&resume_lock);
	for (i = 0; i < n_resumes && strcmp(resumes[i].key, key); i++)
		;
	if (i == n_resumes) {
		if (n_resumes < RESUME_MAX) {
			n_resumes++;
		} else {
			i = resume_next;
			resume_next = (resume_next + 1) % RESUME_MAX;
			free(resumes[i].key);
			gnutls_free(resumes[i].data.data);
		}
		resumes[i].key = xstrdup(key);
	} else {
		gnutls_free(resumes[i].data.data);
	}
	resumes[i].data = d;
	pthread_mutex_unlock(&resume_lock);
	return true;
}

static int
wait_fd(int fd, short events, unsigned long timeout_s)
{
	struct pollfd p = { fd, events, 0 };
	int ms = timeout_s ? (int)(timeout_s * 1000) : 300 * 1000;
	int r;
	do
		r = poll(&p, 1, ms);
	while (r < 0 && errno == EINTR);
	return r > 0 ? 0 : -1;   /* timeout or error */
}

static ssize_t
ns_read_raw(mailstream_low *low, void *buf, size_t n)
{
	struct netstream *ns = low->data;
	ssize_t r;

	for (;;) {
		if (!(ns->tls && gnutls_record_check_pending(ns->tls) > 0) &&
		    wait_fd(ns->fd, POLLIN, low->timeout) < 0)
			return -1;
		if (ns->tls) {
			r = gnutls_record_recv(ns->tls, buf, n);
			if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
				continue;
			/* a ticket comes with the first records, if at all: a
			 * server that sends none is not asked on every read */
			if (r > 0 && ns->resume_key && (resume_keep(ns->tls, ns->resume_key) ||
			    ++ns->resume_reads >= RESUME_READS)) {
				free(ns->resume_key);
				ns->resume_key = NULL;
			}
			return r < 0 ? -1 : r;
		}
		r = recv(ns->fd, buf, n, 0);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		return r;
	}
}

/* libetpan allocates a literal's announced size at once: a server saying
 * "{4294967296}" asked for 4 GiB (found by fuzz_imap). Far above what any
 * mail service accepts (Gmail 50 MB, Microsoft 365 150 MB). */
#define NETSTREAM_IMAP_MAX_LITERAL ((uint64_t)256 << 20)

/* What an IMAP server says, as it is read, for libetpan 1.9.4's sake:
 * - it crashes on a PERMANENTFLAGS response code it cannot parse (a lone
 *   backslash or a NUL among the flags) and on any PERMANENTFLAGS in the
 *   greeting (found by fuzz_imap). We never use them, so outside literals
 *   every "[PERMANENTFLAGS" becomes the unknown code "[PERMANENTFLAGX"
 *   (same length; its last byte is always in the current read);
 * - a literal size over NETSTREAM_IMAP_MAX_LITERAL drops the connection
 *   (ns->imap.too_big) before libetpan has read all its digits;
 * - so does a literal's "{N}" followed by anything but CRLF (or LF):
 *   libetpan's parser backtracks over it and may later read as protocol
 *   what this scan took for literal bytes, where a forged size escapes
 *   the check above (found by fuzz_imap: a 4 GiB allocation at LOGOUT).
 *   No server sends that in the responses we ask for.
 * Literals ("{N}" CRLF then N bytes: message bodies) pass untouched. */
static void
imap_scan(struct netstream *ns, char *buf, ssize_t len)
{
	static const char pat[] = "[PERMANENTFLAGS";

	for (ssize_t i = 0; i < len; i++) {
		char c = buf[i];
		if (ns->imap.literal > 0) {
			ssize_t skip = len - i < (ssize_t)ns->imap.literal ? len - i : (ssize_t)ns->imap.literal;
			ns->imap.literal -= (uint64_t)skip;
			i += skip - 1;
			continue;
		}
		if (toupper((unsigned char)c) == pat[ns->imap.match]) {   /* atoms ignore case */
			if (++ns->imap.match == sizeof(pat) - 1) {
				buf[i] = 'X';
				ns->imap.match = 0;
			}
		} else {
			ns->imap.match = c == '[' ? 1 : 0;
		}
		if (c == '{') {
			ns->imap.brace = 1;
			ns->imap.num = 0;
		} else if (ns->imap.brace == 1 && c >= '0' && c <= '9') {
			/* libetpan allocates once it has the number, whatever follows */
			ns->imap.num = ns->imap.num * 10 + (uint64_t)(c - '0');
			if (ns->imap.num > NETSTREAM_IMAP_MAX_LITERAL) {
				log_error("imap: the server announced a literal of more than %llu MiB; "
				    "dropping the connection", (unsigned long long)(NETSTREAM_IMAP_MAX_LITERAL >> 20));
				ns->imap.too_big = true;
				return;
			}
		} else if (ns->imap.brace == 1 && c == '}') {
			ns->imap.brace = 2;
		} else if (ns->imap.brace == 2 && c == '\r') {
			ns->imap.brace = 3;
		} else if ((ns->imap.brace == 2 || ns->imap.brace == 3) && c == '\n') {
			/* libetpan takes a bare LF for the CRLF too: so must we, or
			 * we lose step with it (found by fuzz_imap) */
			ns->imap.literal = ns->imap.num;
			ns->imap.brace = 0;
		} else if (ns->imap.brace == 2 || ns->imap.brace == 3) {
			log_error("imap: the server sent a literal's size not followed by CRLF; dropping the connection");
			ns->imap.too_big = true;
			return;
		} else {
			ns->imap.brace = 0;
		}
	}
}

static ssize_t
ns_read(mailstream_low *low, void *buf, size_t n)
{
	struct netstream *ns = low->data;
	ssize_t r;

	/* libetpan 1.9.4 reads an IMAP literal in a loop that stops only on
	 * -1: a server closing mid-literal returned 0 forever and spun the
	 * worker (found by fuzz_imap). EOF is reported once, then an error. */
	if (ns->eof || ns->imap.too_big)
		return -1;
	r = ns_read_raw(low, buf, n);
	if (r == 0)
		ns->eof = true;
	if (ns->imap.on) {
		imap_scan(ns, buf, r);
		if (ns->imap.too_big)
			return -1;   /* before libetpan sees the size */
	}

	if (ns->smtp_replies)
		for (ssize_t i = 0; i < r; i++)
			if (((char *)buf)[i] == '\t')
				((char *)buf)[i] = ' ';
	return r;
}

static ssize_t
ns_write(mailstream_low *low, const void *buf, size_t n)
{
	struct netstream *ns = low->data;
	ssize_t r;

	for (;;) {
		if (wait_fd(ns->fd, POLLOUT, low->timeout) < 0)
			return -1;
		if (ns->tls) {
			r = gnutls_record_send(ns->tls, buf, n);
			if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
				continue;
			return r < 0 ? -1 : r;
		}
		r = send(ns->fd, buf, n, MSG_NOSIGNAL);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		return r;
	}
}

static int
ns_close(mailstream_low *low)
{
	struct netstream *ns = low->data;
	if (ns->tls) {
		gnutls_deinit(ns->tls);
		ns->tls = NULL;
	}
	if (ns->fd >= 0) {
		close(ns->fd);
		ns->fd = -1;
	}
	return 0;
}

static int
ns_get_fd(mailstream_low *low)
{
	return ((struct netstream *)low->data)->fd;
}

static void
ns_free(mailstream_low *low)
{
	ns_close(low);
	free(((struct netstream *)low->data)->resume_key);
	free(low->data);
	free(low);
}

static void ns_cancel(mailstream_low *low) { (void)low; }
static struct mailstream_cancel *ns_get_cancel(mailstream_low *low) { (void)low; return NULL; }
static carray *ns_get_chain(mailstream_low *low) { (void)low; return NULL; }
static int ns_idle_noop(mailstream_low *low) { (void)low; return -1; }

static mailstream_low_driver netstream_driver = {
	.mailstream_read = ns_read,
	.mailstream_write = ns_write,
	.mailstream_close = ns_close,
	.mailstream_get_fd = ns_get_fd,
	.mailstream_free = ns_free,
	.mailstream_cancel = ns_cancel,
	.mailstream_get_cancel = ns_get_cancel,
	.mailstream_get_certificate_chain = ns_get_chain,
	.mailstream_setup_idle = ns_idle_noop,
	.mailstream_unsetup_idle = ns_idle_noop,
	.mailstream_interrupt_idle = ns_idle_noop,
};

static int
tcp_connect(const char *host, int port, int timeout, char **error_r)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL, *ai;
	char portstr[16];
	int fd = -1, r, err = 0;

	snprintf(portstr, sizeof(portstr), "%d", port);
	r = getaddrinfo(host, portstr, &hints, &res);
	if (r != 0) {
		*error_r = xasprintf("cannot resolve %s: %s", host, gai_strerror(r));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		socklen_t len = sizeof(err);
		int flags, one = 1;
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		flags = fcntl(fd, F_GETFL);
		fcntl(fd, F_SETFL, flags | O_NONBLOCK);
		r = connect(fd, ai->ai_addr, ai->ai_addrlen);
		if (r < 0 && errno == EINPROGRESS) {
			if (wait_fd(fd, POLLOUT, (unsigned long)timeout) < 0)
				err = ETIMEDOUT;
			else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
				err = errno;
		} else if (r < 0) {
			err = errno;
		} else {
			err = 0;
		}
		if (err == 0) {
			fcntl(fd, F_SETFL, flags);
			/* libetpan writes a command and data in pieces: no Nagle delays */
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
			break;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		*error_r = xasprintf("cannot connect to %s:%d: %s", host, port, strerror(err ? err : ECONNREFUSED));
	return fd;
}

static bool
is_ip_literal(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;
	return inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

/* The port the socket is connected to (the cache's key: STARTTLS does
 * not know it), 0 if unknown. */
static int
peer_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

#define NETSTREAM_TLS_FLOOR "-VERS-TLS1.0:-VERS-TLS1.1:-VERS-DTLS1.0"

/* One priority cache for every session, kept for the process like the
 * credentials: gnutls_set_default_priority_append built one per session,
 * 8 of a session's 16 KiB of heap, and so of each idle IMAP mailbox's.
 * GnuTLS counts the sessions that use it; they only read it. */
static pthread_once_t prio_once = PTHREAD_ONCE_INIT;
static gnutls_priority_t prio;

static void
prio_init(void)
{
	const char *err = NULL;
	/* the system's policy, less TLS 1.0 and 1.1: never weaker than 1.2,
	 * and stricter still where the system says so */
	if (gnutls_priority_init2(&prio, NETSTREAM_TLS_FLOOR, &err, GNUTLS_PRIORITY_INIT_DEF_APPEND) < 0)
		prio = NULL;
}

static int
tls_handshake(struct netstream *ns, const char *host, const struct netstream_tls *t, int timeout, char **error_r)
{
	gnutls_certificate_credentials_t cred = cred_get(t->ca_file, error_r);
	int r;

	if (!cred)
		return -1;
	gnutls_init(&ns->tls, GNUTLS_CLIENT);
	pthread_once(&prio_once, prio_init);
	if (!prio || gnutls_priority_set(ns->tls, prio) < 0) {
		*error_r = xstrdup("TLS: cannot set the priority string");
		gnutls_deinit(ns->tls);
		ns->tls = NULL;
		return -1;
	}
	gnutls_credentials_set(ns->tls, GNUTLS_CRD_CERTIFICATE, cred);
	if (!is_ip_literal(host))
		gnutls_server_name_set(ns->tls, GNUTLS_NAME_DNS, host, strlen(host));
	if (t->verify)
		gnutls_session_set_verify_cert(ns->tls, host, 0);
	gnutls_transport_set_int(ns->tls, ns->fd);
	gnutls_handshake_set_timeout(ns->tls, (unsigned)timeout * 1000);
	free(ns->resume_key);
	ns->resume_key = resume_key(host, peer_port(ns->fd), t);
	resume_offer(ns->tls, ns->resume_key);
	do
		r = gnutls_handshake(ns->tls);
	while (r < 0 && !gnutls_error_is_fatal(r));
	if (r < 0) {
		if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
			gnutls_datum_t out = { NULL, 0 };
			unsigned status = gnutls_session_get_verify_cert_status(ns->tls);
			gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0);
			*error_r = xasprintf("certificate of %s not trusted: %s", host, out.data ? (char *)out.data : "?");
			gnutls_free(out.data);
		} else {
			*error_r = xasprintf("TLS handshake with %s failed: %s", host, gnutls_strerror(r));
		}
		gnutls_deinit(ns->tls);
		ns->tls = NULL;
		free(ns->resume_key);
		ns->resume_key = NULL;
		return -1;
	}
	if (gnutls_session_is_resumed(ns->tls))
		log_debug("TLS: session with %s resumed", host);
	/* TLS 1.2's session can be kept now; 1.3's ticket comes with the data */
	if (resume_keep(ns->tls, ns->resume_key)) {
		free(ns->resume_key);
		ns->resume_key = NULL;
	}
	return 0;
}

mailstream *
netstream_connect(const char *host, int port, const struct netstream_tls *tls, int timeout, size_t buffer,
    char **error_r)
{
	struct netstream *ns;
	mailstream_low *low;
	mailstream *s;
	int fd = tcp_connect(host, port, timeout, error_r);

	if (fd < 0)
		return NULL;
	ns = xcalloc(1, sizeof(*ns));
	ns->fd = fd;
	if (tls && tls_handshake(ns, host, tls, timeout, error_r) < 0) {
		close(fd);
		free(ns);
		return NULL;
	}
	low = mailstream_low_new(ns, &netstream_driver);
	mailstream_low_set_timeout(low, (unsigned long)timeout);
	s = mailstream_new(low, buffer);
	return s;
}

/* Our state behind a libetpan stream, or NULL if it is not a netstream. */
static struct netstream *
netstream_of(mailstream *s)
{
	mailstream_low *low = s ? mailstream_get_low(s) : NULL;
	return low && low->driver == &netstream_driver ? low->data : NULL;
}

int
netstream_starttls(mailstream *s, const char *host, const struct netstream_tls *tls, char **error_r)
{
	mailstream_low *low = mailstream_get_low(s);
	struct netstream *ns = netstream_of(s);

	if (!ns || ns->tls) {
		*error_r = xstrdup("STARTTLS on a stream that is not a plain netstream");
		return -1;
	}
	/* anything buffered before the handshake would be a plaintext injection */
	if (s->read_buffer_len > 0) {
		*error_r = xstrdup("data after the STARTTLS reply (possible injection); refusing");
		return -1;
	}
	return tls_handshake(ns, host, tls, (int)(low->timeout ? low->timeout : 60), error_r);
}

void
netstream_imap_responses(mailstream *s)
{
	struct netstream *ns = netstream_of(s);
	if (ns)
		ns->imap.on = true;
}

void
netstream_smtp_replies(mailstream *s)
{
	struct netstream *ns = netstream_of(s);
	if (ns)
		ns->smtp_replies = true;
}

bool
netstream_pending(mailstream *s)
{
	struct netstream *ns = netstream_of(s);

	if (s && s->read_buffer_len > 0)
		return true;
	return ns && ns->tls && gnutls_record_check_pending(ns->tls) > 0;
}
