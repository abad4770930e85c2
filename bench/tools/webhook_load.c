/* webhook_load: posts prepared, signed webhooks to mailbridge and times
 * each answer. bench/outbound.py uses it when built, so the latency it
 * reports is mailbridge's and not the Python client's (whose threads share
 * one interpreter lock with the fake HighLevel API answering the status
 * reports).
 *
 *   cc -O2 -pthread -o /tmp/webhook_load bench/tools/webhook_load.c
 *   webhook_load HOST PORT CLIENTS RATE FILE
 *
 * FILE: one webhook per line, "signature<TAB>body" (JSON has no raw
 * newline). RATE: webhooks per second, 0 for as fast as possible. Prints
 * one JSON line: accepted, seconds, p50/p99/max in ms; exits 1 if any
 * answer was not 200. */
#define _GNU_SOURCE             /* strcasestr */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

struct item {
	char *sig, *body;
	size_t body_len;
};

static struct item *items;
static size_t n_items, next_item;
static double *lat, *sent_at, start;
static double rate;
static int bad;
static const char *host;
static int port;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static double
now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
dial(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	inet_pton(AF_INET, host, &sa.sin_addr);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("connect");
		exit(2);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Reads one HTTP response; returns its status, or -1 if the peer closed. */
static int
read_response(int fd)
{
	char buf[8192];
	size_t have = 0;
	char *end, *cl;
	long body;
	int status;

	for (;;) {
		ssize_t r = read(fd, buf + have, sizeof(buf) - 1 - have);
		if (r <= 0)
			return -1;
		have += (size_t)r;
		buf[have] = '\0';
		if ((end = strstr(buf, "\r\n\r\n")) != NULL)
			break;
		if (have == sizeof(buf) - 1)
			return -1;
	}
	status = atoi(buf + 9);
	cl = strcasestr(buf, "\r\nContent-Length:");
	body = cl ? atol(cl + 17) : 0;
	body -= (long)(buf + have - (end + 4));
	while (body > 0) {
		ssize_t r = read(fd, buf, sizeof(buf) < (size_t)body ? sizeof(buf) : (size_t)body);
		if (r <= 0)
			return -1;
		body -= r;
	}
	return status;
}

static void *
client(void *arg)
{
	int fd = dial();
	(void)arg;
	for (;;) {
		size_t i;
		char head[1024];
		struct iovec iov[2];
		double t;
		int hl, status;

		pthread_mutex_lock(&lock);
		i = next_item++;
		pthread_mutex_unlock(&lock);
		if (i >= n_items)
			break;
		if (rate > 0) {
			double wait = start + i / rate - now();
			if (wait > 0) {
				struct timespec ts = { (time_t)wait, (long)((wait - (time_t)wait) * 1e9) };
				nanosleep(&ts, NULL);
			}
		}
		hl = snprintf(head, sizeof(head), "POST /webhooks/provider HTTP/1.1\r\nHost: %s\r\n"
		    "Content-Type: application/json\r\nX-GHL-Signature: %s\r\nContent-Length: %zu\r\n\r\n",
		    host, items[i].sig, items[i].body_len);
		t = now();
		iov[0] = (struct iovec){ head, (size_t)hl };
		iov[1] = (struct iovec){ items[i].body, items[i].body_len };
		/* one writev: a request in two segments would time Nagle, not us */
		if (writev(fd, iov, 2) != (ssize_t)(hl + items[i].body_len) || (status = read_response(fd)) < 0) {
			fprintf(stderr, "webhook %zu: connection lost\n", i);
			exit(2);
		}
		lat[i] = now() - t;
		sent_at[i] = t - start;
		if (status != 200) {
			pthread_mutex_lock(&lock);
			if (!bad)
				fprintf(stderr, "webhook %zu: HTTP %d\n", i, status);
			bad++;
			pthread_mutex_unlock(&lock);
		}
	}
	close(fd);
	return NULL;
}

static int
cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
	FILE *f;
	char *line = NULL;
	size_t cap = 0, n_alloc = 0;
	ssize_t len;
	int clients;
	pthread_t *th;
	double took;

	if (argc != 6) {
		fprintf(stderr, "usage: webhook_load HOST PORT CLIENTS RATE FILE\n");
		return 2;
	}
	host = argv[1];
	port = atoi(argv[2]);
	clients = atoi(argv[3]);
	rate = atof(argv[4]);
	if (!(f = fopen(argv[5], "r"))) {
		perror(argv[5]);
		return 2;
	}
	while ((len = getline(&line, &cap, f)) > 0) {
		char *tab = strchr(line, '\t');
		if (!tab)
			continue;
		if (line[len - 1] == '\n')
			line[--len] = '\0';
		if (n_items == n_alloc && !(items = realloc(items, (n_alloc = n_alloc * 2 + 64) * sizeof(*items))))
			return 2;
		*tab = '\0';
		items[n_items].sig = strdup(line);
		items[n_items].body = strdup(tab + 1);
		items[n_items].body_len = strlen(tab + 1);
		n_items++;
	}
	free(line);
	fclose(f);
	lat = calloc(n_items ? n_items : 1, sizeof(*lat));
	sent_at = calloc(n_items ? n_items : 1, sizeof(*sent_at));
	th = calloc((size_t)clients, sizeof(*th));
	start = now();
	for (int i = 0; i < clients; i++)
		pthread_create(&th[i], NULL, client, NULL);
	for (int i = 0; i < clients; i++)
		pthread_join(th[i], NULL);
	took = now() - start;
	/* WEBHOOK_LOAD_TRACE=FILE: each webhook's send time and ack, in
	 * seconds from the start, one line each (where the slow acks fall) */
	if (getenv("WEBHOOK_LOAD_TRACE")) {
		FILE *t = fopen(getenv("WEBHOOK_LOAD_TRACE"), "w");
		for (size_t i = 0; t && i < n_items; i++)
			fprintf(t, "%.6f %.6f\n", sent_at[i], lat[i]);
		if (t)
			fclose(t);
	}
	qsort(lat, n_items, sizeof(*lat), cmp);
	printf("{\"accepted\": %zu, \"seconds\": %.3f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f, "
	    "\"not_200\": %d}\n", n_items - (size_t)bad, took,
	    n_items ? lat[n_items / 2] * 1000 : 0, n_items ? lat[n_items * 99 / 100] * 1000 : 0,
	    n_items ? lat[n_items - 1] * 1000 : 0, bad);
	for (size_t i = 0; i < n_items; i++) {
		free(items[i].sig);
		free(items[i].body);
	}
	free(items);
	free(lat);
	free(sent_at);
	free(th);
	return bad ? 1 : 0;
}
