/* netstream: our own libetpan stream driver (mailstream_low) over a TCP
 * socket, optionally wrapped in GnuTLS. Why not libetpan's own:
 *  - it waits with select(): any fd >= 1024 aborts the process, and it
 *    opens a cancel pipe per stream (3 fds per mailbox), so a few hundred
 *    watched mailboxes crashed it (measured);
 *  - it does not verify certificates (LIBRARIES.md B.1): here GnuTLS
 *    checks the chain and the host name during the handshake, against the
 *    system trust store or a CA file, before any credential is sent;
 *  - its 8 KiB read and write buffers per stream dominate idle memory.
 * Waits use poll() with the stream's timeout; writes use MSG_NOSIGNAL. */
#ifndef MB_NETSTREAM_H
#define MB_NETSTREAM_H

#include <libetpan/libetpan.h>
#include <stdbool.h>

struct netstream_tls {
	bool verify;               /* chain + host name (default yes) */
	const char *ca_file;       /* NULL: system trust store */
};

/* Stream buffer sizes (libetpan's read and write buffer, each): small for
 * the many idle IMAP connections; bulk for SMTP, where one message should
 * leave in a few writes rather than one per 4 KiB (each write wakes the
 * relay's smtpd: 35 KB messages went out in 9 writes). */
#define NETSTREAM_BUFFER_SMALL 4096
#define NETSTREAM_BUFFER_BULK  65536

/* Connects to host:port within timeout seconds; TLS from the first byte
 * when tls is non-NULL. Returns a stream for mailimap_connect /
 * mailsmtp_connect, or NULL with *error_r (malloc'd). */
mailstream *netstream_connect(const char *host, int port, const struct netstream_tls *tls,
    int timeout, size_t buffer, char **error_r);

/* Upgrades a plain stream in place after the server accepted STARTTLS.
 * host is the name to verify. 0 or -1 with *error_r. */
int netstream_starttls(mailstream *s, const char *host, const struct netstream_tls *tls, char **error_r);

/* Marks a stream as carrying SMTP replies only: a TAB read becomes a space.
 * Replies may contain TAB (RFC 5321 textstring), but libetpan 1.9.4's EHLO
 * parser loops forever on one in the AUTH line (found by fuzz_smtp_reply);
 * reply text is all we read on an SMTP stream, so the change is harmless. */
void netstream_smtp_replies(mailstream *s);

/* Marks a stream as an IMAP connection, guarded against what crashes or
 * exhausts libetpan 1.9.4 (see imap_scan): PERMANENTFLAGS response codes
 * read as an unknown code, and a literal announced over 256 MiB drops the
 * connection. Call before mailimap_connect; literals (message bodies) are
 * never changed. */
void netstream_imap_responses(mailstream *s);

/* Bytes already decrypted or buffered that poll()/epoll will not report. */
bool netstream_pending(mailstream *s);

#endif
