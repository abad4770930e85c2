/* dns: the few DNS questions `mailbridge doctor` asks (TXT, MX, A/AAAA),
 * through libunbound: a real validating-capable resolver library rather
 * than a hand-written one. It asks the system's resolvers
 * (/etc/resolv.conf), or the one named (an address, optionally @port). */
#ifndef MB_DNS_H
#define MB_DNS_H

#include <stddef.h>
#include <sys/socket.h>

struct dns;

/* resolver: NULL or "" for the system's; else "192.0.2.53" or "::1@5353".
 * NULL with *error_r on failure. */
struct dns *dns_open(const char *resolver, char **error_r);
void dns_close(struct dns *d);

/* Each answer: the number of records (0 when the name or the type does
 * not exist), or -1 when the question could not be answered (SERVFAIL,
 * timeout: a temporary error, *error_r says which). The arrays are
 * NULL-terminated (strings) or sized by the return value; free with
 * dns_strings_free / free. */
int dns_txt(struct dns *d, const char *name, char ***records_r, char **error_r);   /* strings joined */
int dns_mx(struct dns *d, const char *name, char ***hosts_r, char **error_r);      /* by preference */
int dns_addrs(struct dns *d, const char *name, struct sockaddr_storage **addrs_r, char **error_r);
void dns_strings_free(char **v);

#endif
