/* netaddr: which network addresses a request from outside may make us
 * reach, and allow-lists of CIDRs and origins. Used by the attachment
 * fetcher (SSRF), the plugin routes and the LMTP listener (peer checks).
 * URL parsing is libcurl's (CURLU), not ours. */
#ifndef MB_NETADDR_H
#define MB_NETADDR_H

#include <stdbool.h>
#include <stddef.h>

struct sockaddr;

struct netaddr_rule {
	int family;                /* AF_INET, AF_INET6, or 0 for an origin */
	unsigned char addr[16];
	unsigned prefix;           /* bits */
	char *origin;              /* "scheme://host:port", lowercase */
};

struct netaddr_list {
	struct netaddr_rule *rules;
	size_t n;
};

/* Parses a comma- or space-separated list of CIDRs ("10.0.0.0/8",
 * "::1", a bare address is /32 or /128) and origins ("http://host:8080",
 * "https://files.internal"). An empty or NULL spec gives an empty list.
 * 0, or -1 with *error_r (malloc'd) naming the bad entry. */
int netaddr_list_parse(const char *spec, struct netaddr_list *out, char **error_r);
void netaddr_list_clear(struct netaddr_list *l);

/* True when a CIDR of the list contains the address (IPv4-mapped IPv6
 * addresses match IPv4 rules). */
bool netaddr_list_has_addr(const struct netaddr_list *l, const struct sockaddr *sa);
/* True when the URL's scheme://host:port is one of the list's origins. */
bool netaddr_list_has_origin(const struct netaddr_list *l, const char *url);

/* True for an address on the public Internet: false for loopback,
 * private (RFC 1918, CGNAT 100.64/10, ULA fc00::/7), link-local
 * (169.254/16, fe80::/10), unspecified, multicast, broadcast and
 * reserved ranges, including those embedded in IPv4-mapped and NAT64
 * IPv6 addresses. */
bool netaddr_is_public(const struct sockaddr *sa);

/* The 16 bytes of an IPv4 (as ::ffff:a.b.c.d) or IPv6 address, for
 * comparing peers; false for other families or NULL. */
bool netaddr_key16(const struct sockaddr *sa, unsigned char out[16]);

/* The address as text ("192.0.2.1", "::1") into buf; "?" for others. */
const char *netaddr_to_string(const struct sockaddr *sa, char *buf, size_t len);

/* True for a loopback address given as text (127.0.0.0/8, ::1) or the
 * name "localhost". */
bool netaddr_text_is_loopback(const char *host);

/* Parses a literal IPv4 or IPv6 address (no brackets) into sa_r
 * (struct sockaddr_storage's size). 0 or -1. */
int netaddr_from_string(const char *s, void *sa_r);

/* A listening address: a literal IPv4 or IPv6 address, the latter in
 * brackets or not, or "localhost" (127.0.0.1), with port set. 0 or -1. */
int netaddr_parse_host(const char *host, int port, void *sa_r);
/* "host:port", host as netaddr_parse_host takes it ("[::1]:8080"), port
 * 0-65535. 0, or -1 with *error_r saying what is wrong. port_r may be NULL. */
int netaddr_parse_hostport(const char *spec, void *sa_r, int *port_r, char **error_r);

/* True when ip is within net/bits (both of one family; bits of that
 * family: 0-32 or 0-128). */
bool netaddr_in_prefix(const struct sockaddr *ip, const struct sockaddr *net, int bits);

/* True for an absolute http:// or https:// URL with a host. */
bool netaddr_url_is_http(const char *url);

#endif
