/* lmtp: direct intake from Postfix for domains it receives itself
 * (virtual_transport / transport_maps = lmtp:inet:host:port). Replies and
 * DSNs take the same path as IMAP after intake (inbound.c); per recipient
 * the answer is 250 only once the message is recorded durably, 451 on
 * temporary trouble (Postfix keeps it and retries), 550 for addresses no
 * location claims. A thread per connection, at most lmtp_max_sessions;
 * TCP peers must be in lmtp_allow (loopback by default); a UNIX socket
 * (unix:/path, mode 0660) is guarded by its file mode. Message lines are
 * kept whole, however long: only the size limit refuses a message. */
#ifndef MB_LMTP_H
#define MB_LMTP_H

struct app;
struct lmtp_server;

/* listen is "host:port" or "unix:/path". NULL with *error_r on failure. */
struct lmtp_server *lmtp_start(struct app *app, const char *listen, char **error_r);
void lmtp_stop(struct lmtp_server *srv);

/* The location an envelope recipient belongs to, or NULL: the location's
 * From address, one of its lmtp_addresses, or reply+/bounce+ on its
 * reply_domain (the token decides when several share the domain). */
const struct location_config *lmtp_route(struct app *app, const char *rcpt);

#endif
