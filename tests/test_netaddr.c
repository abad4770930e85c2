/* netaddr: what counts as public (the SSRF guard's core), CIDR and origin
 * allow-lists. */
#include "netaddr.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static bool
is_public(const char *s)
{
	struct sockaddr_storage ss;
	if (netaddr_from_string(s, &ss) < 0) {
		fprintf(stderr, "bad test address %s\n", s);
		exit(2);
	}
	return netaddr_is_public((struct sockaddr *)&ss);
}

static bool
in_list(const struct netaddr_list *l, const char *s)
{
	struct sockaddr_storage ss;
	netaddr_from_string(s, &ss);
	return netaddr_list_has_addr(l, (struct sockaddr *)&ss);
}

int
main(void)
{
	static const struct { const char *addr; bool pub; } rows[] = {
		{ "8.8.8.8", true }, { "93.184.216.34", true }, { "2606:4700::1111", true },
		{ "127.0.0.1", false }, { "127.255.0.9", false }, { "::1", false }, { "::", false },
		{ "0.0.0.0", false }, { "10.1.2.3", false }, { "172.16.0.1", false }, { "172.31.255.255", false },
		{ "172.32.0.1", true }, { "192.168.1.1", false }, { "100.64.0.1", false }, { "100.127.255.1", false },
		{ "100.128.0.1", true }, { "169.254.169.254", false }, { "224.0.0.1", false },
		{ "255.255.255.255", false }, { "fc00::1", false }, { "fd12:3456::1", false }, { "fe80::1", false },
		{ "ff02::1", false }, { "::ffff:127.0.0.1", false }, { "::ffff:169.254.169.254", false },
		{ "::ffff:8.8.8.8", true }, { "64:ff9b::a9fe:a9fe", false }, { "64:ff9b::808:808", true },
		{ "2002:7f00:1::", false }, { "::127.0.0.1", false },
	};
	struct netaddr_list l;
	char *err = NULL;

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		CHECK_IDX(is_public(rows[i].addr) == rows[i].pub, i);

	CHECK(netaddr_list_parse("10.0.0.0/8, 192.168.5.7 fd00::/8,http://files.internal:8080", &l, &err) == 0);
	CHECK(l.n == 4);
	CHECK(in_list(&l, "10.200.1.1"));
	CHECK(in_list(&l, "::ffff:10.0.0.1"));
	CHECK(in_list(&l, "192.168.5.7"));
	CHECK(!in_list(&l, "192.168.5.8"));
	CHECK(in_list(&l, "fd00::5"));
	CHECK(!in_list(&l, "fe80::5"));
	CHECK(!in_list(&l, "127.0.0.1"));
	CHECK(netaddr_list_has_origin(&l, "http://FILES.internal:8080/a/b?x=1"));
	CHECK(!netaddr_list_has_origin(&l, "http://files.internal/a"));      /* port 80 */
	CHECK(!netaddr_list_has_origin(&l, "https://files.internal:8080/"));
	CHECK(!netaddr_list_has_origin(&l, "http://files.internal:8080@evil.example/"));
	netaddr_list_clear(&l);

	CHECK(netaddr_list_parse("https://x.test", &l, &err) == 0);
	CHECK(netaddr_list_has_origin(&l, "https://x.test:443/f.pdf"));
	netaddr_list_clear(&l);

	CHECK(netaddr_list_parse(NULL, &l, &err) == 0 && l.n == 0);
	CHECK(netaddr_list_parse("10.0.0.0/33", &l, &err) < 0 && err && strstr(err, "10.0.0.0/33"));
	free(err);
	err = NULL;
	CHECK(netaddr_list_parse("files.internal", &l, &err) < 0);
	free(err);
	/* loopback by text, addresses as text and as keys */
	CHECK(netaddr_text_is_loopback("localhost") && netaddr_text_is_loopback("127.0.0.1") &&
	    netaddr_text_is_loopback("127.9.9.9") && netaddr_text_is_loopback("::1"));
	CHECK(!netaddr_text_is_loopback("::2") && !netaddr_text_is_loopback("128.0.0.1") &&
	    !netaddr_text_is_loopback("relay.example") && !netaddr_text_is_loopback("::ffff:10.0.0.1"));
	{
		struct sockaddr_storage a, b;
		unsigned char ka[16], kb[16];
		char buf[64];
		netaddr_from_string("192.0.2.7", &a);
		netaddr_from_string("::ffff:192.0.2.7", &b);
		CHECK(netaddr_key16((struct sockaddr *)&a, ka) && netaddr_key16((struct sockaddr *)&b, kb) &&
		    memcmp(ka, kb, 16) == 0);
		CHECK(strcmp(netaddr_to_string((struct sockaddr *)&a, buf, sizeof(buf)), "192.0.2.7") == 0);
		netaddr_from_string("2001:db8::5", &a);
		CHECK(strcmp(netaddr_to_string((struct sockaddr *)&a, buf, sizeof(buf)), "2001:db8::5") == 0);
		CHECK(strcmp(netaddr_to_string(NULL, buf, sizeof(buf)), "?") == 0 && !netaddr_key16(NULL, ka));
	}
	return test_done("test_netaddr");
}
