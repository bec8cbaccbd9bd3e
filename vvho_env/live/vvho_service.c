/*
 * vvho-service: the request/response service of the VVHO test guest (and the probe's host-local echo).
 *
 * Why not `nc -l -p 7 -e cat`: that forks a process per connection and has no service time, so the
 * guest's scheduling (the thing the knobs change) barely shows in the latency. This service multiplexes
 * many connections with epoll and, for each request line "<spin_us> <payload>", spins for spin_us
 * microseconds of wall time before echoing the line back: real per-request CPU work inside the guest.
 *
 * Control lines start with '!' and set guest-side knobs through their real /proc files:
 *   "!get <name>"          -> "ok <name> <value>"
 *   "!set <name> <value>"  -> "ok <name> <value>" (read back) or "err <reason>"
 * where <name> is one of the entries of KNOB_FILES. Anything else answers "err ...".
 *
 * Usage: vvho-service [port] [bind-address] [--no-control] [--die-with-parent]   (defaults: 7, 0.0.0.0)
 * --no-control refuses control lines: the host-local echo must never touch the host's own sysctls.
 * --die-with-parent: exit when the process that started it dies (PR_SET_PDEATHSIG), so that the probe's
 * host-local echo never outlives a killed controller.
 * --metrics-port N: also serve, over HTTP on port N, a Prometheus histogram of request durations as the
 * service itself sees them (from the arrival of a request's bytes to its reply), the way any instrumented
 * application exports them; the host agent's passive latency source reads it.
 * Built with gcc -static so it runs in a busybox initramfs with no libc.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 64
#define BUF_SIZE 8192
#define MAX_FD 4096
#define MAX_SPIN_US 1000000L

struct conn {
    char in[BUF_SIZE];
    size_t len;
    int http; /* a metrics scrape, not a request stream */
};

/* vvho_request_duration_seconds: cumulative counts per upper bound (the last one is +Inf) */
static const double BOUNDS_S[] = {50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3,
                                  100e-3, 200e-3, 500e-3, 1.0, 2.0, 5.0};
#define N_BOUNDS (sizeof BOUNDS_S / sizeof BOUNDS_S[0])
static unsigned long long hist[N_BOUNDS + 1];
static double hist_sum_s;

static struct conn *conns[MAX_FD];

static const char *KNOB_FILES[][2] = {
    {"busy_poll", "/proc/sys/net/core/busy_poll"},
    {"busy_read", "/proc/sys/net/core/busy_read"},
};

static long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000L + ts.tv_nsec / 1000;
}

static void spin(long us) {
    if (us <= 0) return;
    if (us > MAX_SPIN_US) us = MAX_SPIN_US;
    long end = now_us() + us;
    while (now_us() < end) {
    }
}

static void send_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {  /* peer slow: block briefly rather than drop a reply */
                usleep(100);
                continue;
            }
            return;
        }
        buf += w;
        n -= (size_t)w;
    }
}

static const char *knob_path(const char *name) {
    for (size_t i = 0; i < sizeof(KNOB_FILES) / sizeof(KNOB_FILES[0]); i++)
        if (strcmp(KNOB_FILES[i][0], name) == 0) return KNOB_FILES[i][1];
    return NULL;
}

static int read_knob(const char *path, char *out, size_t n) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t r = read(fd, out, n - 1);
    close(fd);
    if (r < 0) return -1;
    out[r] = 0;
    char *nl = strchr(out, '\n');
    if (nl) *nl = 0;
    return 0;
}

static int control_enabled = 1;

static void control(int fd, char *line) {
    char reply[512], name[64], value[128], cur[128];
    const char *path;
    if (!control_enabled) {
        snprintf(reply, sizeof reply, "err control lines are disabled on this instance (--no-control)\n");
    } else if (sscanf(line, "!get %63s", name) == 1) {
        if (!(path = knob_path(name)) || read_knob(path, cur, sizeof cur) < 0)
            snprintf(reply, sizeof reply, "err cannot read %s: %s\n", name, path ? strerror(errno) : "unknown knob");
        else
            snprintf(reply, sizeof reply, "ok %s %s\n", name, cur);
    } else if (sscanf(line, "!set %63s %127s", name, value) == 2) {
        int kfd = (path = knob_path(name)) ? open(path, O_WRONLY) : -1;
        if (kfd < 0 || write(kfd, value, strlen(value)) < 0 || read_knob(path, cur, sizeof cur) < 0)
            snprintf(reply, sizeof reply, "err cannot set %s: %s\n", name, path ? strerror(errno) : "unknown knob");
        else
            snprintf(reply, sizeof reply, "ok %s %s\n", name, cur);
        if (kfd >= 0) close(kfd);
    } else {
        snprintf(reply, sizeof reply, "err unknown control line; use '!get NAME' or '!set NAME VALUE'\n");
    }
    send_all(fd, reply, strlen(reply));
}

static void observe(long arrived_us) {
    double d = (now_us() - arrived_us) / 1e6;
    size_t i = 0;
    while (i < N_BOUNDS && d > BOUNDS_S[i]) i++;
    hist[i]++;
    hist_sum_s += d;
}

static void serve_metrics(int fd) {
    char body[4096];
    size_t n = (size_t)snprintf(body, sizeof body,
        "# HELP vvho_request_duration_seconds Time from a request's arrival to its reply, in the service.\n"
        "# TYPE vvho_request_duration_seconds histogram\n");
    unsigned long long cum = 0;
    for (size_t i = 0; i <= N_BOUNDS; i++) {
        cum += hist[i];
        if (i < N_BOUNDS)
            n += (size_t)snprintf(body + n, sizeof body - n, "vvho_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                                  BOUNDS_S[i], cum);
        else
            n += (size_t)snprintf(body + n, sizeof body - n, "vvho_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                                  cum);
    }
    n += (size_t)snprintf(body + n, sizeof body - n,
                          "vvho_request_duration_seconds_sum %.9f\nvvho_request_duration_seconds_count %llu\n",
                          hist_sum_s, cum);
    char head[256];
    int h = snprintf(head, sizeof head, "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n", n);
    send_all(fd, head, (size_t)h);
    send_all(fd, body, n);
}

static void handle_lines(int fd, struct conn *c, long arrived_us) {
    size_t start = 0;
    for (size_t i = 0; i < c->len; i++) {
        if (c->in[i] != '\n') continue;
        c->in[i] = 0;
        char *line = c->in + start;
        if (line[0] == '!') {
            control(fd, line);
        } else {
            spin(strtol(line, NULL, 10));
            c->in[i] = '\n';
            send_all(fd, line, i - start + 1);
            observe(arrived_us);
        }
        start = i + 1;
    }
    memmove(c->in, c->in + start, c->len - start);
    c->len -= start;
    if (c->len == BUF_SIZE) c->len = 0; /* a line longer than the buffer: drop it */
}

static int listen_on(int ep, const char *addr, int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    inet_pton(AF_INET, addr, &sa.sin_addr);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 128) < 0) {
        fprintf(stderr, "vvho-service: cannot listen on %s:%d: %s\n", addr, port, strerror(errno));
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    return fd;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 7;
    const char *addr = argc > 2 ? argv[2] : "0.0.0.0";
    int metrics_port = 0;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--metrics-port") == 0 && i + 1 < argc) {
            metrics_port = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--no-control") == 0) {
            control_enabled = 0;
        } else if (strcmp(argv[i], "--die-with-parent") == 0) {
            pid_t parent = getppid();
            if (parent == 1 || prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent) return 1;
        } else {
            fprintf(stderr, "vvho-service: option %s not accepted; accepted: --no-control, --die-with-parent, "
                    "--metrics-port N\n",
                    argv[i]);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    int ep = epoll_create1(0);
    int ls = listen_on(ep, addr, port);
    int ms = metrics_port ? listen_on(ep, addr, metrics_port) : -1;
    if (ls < 0 || (metrics_port && ms < 0)) return 1;
    struct sockaddr_in bound;
    socklen_t blen = sizeof bound;
    getsockname(ls, (struct sockaddr *)&bound, &blen);
    printf("vvho-service ready on %s:%d\n", addr, ntohs(bound.sin_port));
    fflush(stdout);
    int one = 1;
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == ls || fd == ms) {
                int cfd;
                while ((cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (cfd >= MAX_FD) { close(cfd); continue; }
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conns[cfd] = calloc(1, sizeof(struct conn));
                    conns[cfd]->http = fd == ms;
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = cfd};
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev);
                }
                continue;
            }
            struct conn *c = conns[fd];
            ssize_t r = recv(fd, c->in + c->len, BUF_SIZE - 1 - c->len, 0);
            long arrived = now_us();
            int done = r <= 0 && !(r < 0 && (errno == EAGAIN || errno == EINTR));
            if (r > 0) {
                c->len += (size_t)r;
                if (c->http) {
                    c->in[c->len] = 0;
                    if (strstr(c->in, "\r\n\r\n") || strstr(c->in, "\n\n") || c->len >= BUF_SIZE - 1) {
                        serve_metrics(fd);
                        done = 1;
                    }
                } else {
                    handle_lines(fd, c, arrived);
                }
            }
            if (done) {
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
                free(c);
                conns[fd] = NULL;
            }
        }
    }
}
