/*
 * bench-util.c - clocks, the brokers mbox-bench starts, small libmbox
 * helpers (see bench-util.h).
 *
 * A broker is always a child of ours, known by pid, stopped by pid; its
 * directory holds its socket, store and log, and whatever else a workload
 * puts there (the baselines' files), and is removed when it stops.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench-util.h"

extern char **environ;

double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void
sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double
percentile(double *v, size_t n, unsigned pct)
{
	size_t k;

	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_double);
	/* Nearest rank: the smallest sample >= pct % of them. */
	k = (n * pct + 99) / 100;
	return v[k ? k - 1 : 0];
}

const char *
bench_tmpdir(void)
{
	const char *tmp = getenv("TMPDIR");

	/* Socket paths under it must fit in sun_path. */
	return tmp && *tmp && strlen(tmp) <= 60 ? tmp : "/tmp";
}

int
connect_or_say(mbox **m, const char *sock, char *what, size_t size)
{
	int r = mbox_connect(m, sock);

	if (r < 0)
		snprintf(what, size, "connect %s: %s", sock, mbox_strerror(r));
	return r;
}

int
make_mailbox(const char *sock, const char *name)
{
	mbox *m = NULL;
	int r;

	r = mbox_connect(&m, sock);
	if (r < 0) {
		fprintf(stderr, "mbox-bench: connect %s: %s\n", sock,
			mbox_strerror(r));
		return r;
	}
	r = mbox_create(m, name, NULL);
	if (r < 0 && r != -EEXIST)
		fprintf(stderr, "mbox-bench: create %s: %s (%s)\n", name,
			mbox_strerror(r), mbox_last_error(m));
	else
		r = 0;
	mbox_close(m);
	return r;
}

int
check_size(const char *sock, size_t size)
{
	mbox *m = NULL;
	size_t max;
	int r = mbox_connect(&m, sock);

	if (r < 0) {
		fprintf(stderr, "mbox-bench: connect %s: %s\n", sock,
			mbox_strerror(r));
		return r;
	}
	max = mbox_max_msg_size(m);
	mbox_close(m);
	if (max && size > max) {
		fprintf(stderr,
			"mbox-bench: --size %zu is over the broker's "
			"maximum of %zu bytes\n",
			size, max);
		return -EMSGSIZE;
	}
	return 0;
}

void
thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
	pthread_attr_t attr;

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, BENCH_STACK);
	if (pthread_create(t, &attr, fn, arg)) {
		fprintf(stderr, "mbox-bench: pthread_create failed\n");
		exit(1);
	}
	pthread_attr_destroy(&attr);
}

char **
bench_env(const char *drop, const char *extra)
{
	size_t n = 0, k = 0, len = strlen(drop);
	char **env;

	while (environ[n])
		n++;
	env = calloc(n + 2, sizeof(*env));
	if (!env)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], drop, len))
			env[k++] = environ[i];
	if (extra)
		env[k++] = (char *)extra;
	env[k] = NULL;
	return env;
}

static int
broker_spawn(Broker *b, const char *extra_env)
{
	/* A broker of ours must not talk to a service manager of the
	 * bench. */
	char **env = bench_env("NOTIFY_SOCKET=", extra_env);
	pid_t parent = getpid();

	if (!env)
		return -ENOMEM;
	b->pid = fork();
	if (b->pid < 0) {
		fprintf(stderr, "mbox-bench: fork: %s\n", strerror(errno));
		b->pid = 0;
		free(env);
		return -1;
	}
	if (b->pid == 0) {
		int in = open("/dev/null", O_RDONLY);
		int out = open(b->log, O_WRONLY | O_CREAT | O_APPEND, 0600);

		/* A bench killed (or given up by its watchdog) must not
		 * leave its brokers behind. Forked by the main thread, so
		 * this fires when the process ends. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(1);

		if (in >= 0)
			dup2(in, 0);
		if (out >= 0) {
			dup2(out, 1);
			dup2(out, 2);
		}
		execle(b->mboxd, b->mboxd, "--foreground", "--socket", b->sock,
		       "--db", b->db, "--sync", b->sync, (char *)NULL, env);
		fprintf(stderr, "mbox-bench: exec %s: %s\n", b->mboxd,
			strerror(errno));
		_exit(127);
	}
	free(env);
	return 0;
}

/* The broker ended on its own: say how, forget its pid. */
static bool
broker_exited(Broker *b)
{
	int status;

	if (waitpid(b->pid, &status, WNOHANG) != b->pid)
		return false;
	fprintf(stderr,
		"mbox-bench: %s exited during start-up (%s %d); see %s\n",
		b->mboxd, WIFEXITED(status) ? "status" : "signal",
		WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
		b->log);
	b->pid = 0;
	return true;
}

int
broker_start(Broker *b, const char *mboxd, const char *sync)
{
	unsigned i;

	*b = (Broker){.mboxd = mboxd, .sync = sync};
	if (access(mboxd, X_OK) < 0) {
		fprintf(stderr,
			"mbox-bench: cannot run %s: %s (use --mboxd PATH, "
			"$MBOXD or --socket PATH)\n",
			mboxd, strerror(errno));
		return -1;
	}
	snprintf(b->dir, sizeof(b->dir), "%s/mbox-bench.XXXXXX",
		 bench_tmpdir());
	if (!mkdtemp(b->dir)) {
		fprintf(stderr, "mbox-bench: mkdtemp %s: %s\n", b->dir,
			strerror(errno));
		b->dir[0] = '\0';
		return -1;
	}
	snprintf(b->sock, sizeof(b->sock), "%s/mbox.sock", b->dir);
	snprintf(b->db, sizeof(b->db), "%s/mbox.db", b->dir);
	snprintf(b->log, sizeof(b->log), "%s/mboxd.log", b->dir);
	if (broker_spawn(b, NULL) < 0)
		return -1;
	/* At most 10 s for the broker to come up. */
	for (i = 0; i < 400; i++) {
		mbox *m = NULL;

		if (mbox_connect(&m, b->sock) == 0) {
			int r = mbox_ping(m);

			mbox_close(m);
			if (r == 0)
				return 0;
		}
		if (broker_exited(b))
			return -1;
		sleep_ms(25);
	}
	fprintf(stderr, "mbox-bench: %s did not answer on %s within 10 s\n",
		mboxd, b->sock);
	return -1;
}

/* SIGTERM, wait by pid (SIGKILL after 10 s); false if it ended badly. */
static bool
broker_kill(Broker *b)
{
	pid_t pid = b->pid;
	unsigned i;
	int status = 0;

	b->pid = 0;
	kill(pid, SIGTERM);
	for (i = 0; i < 400; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
		sleep_ms(25);
	}
	if (i == 400) {
		fprintf(stderr, "mbox-bench: mboxd ignored SIGTERM, killing\n");
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		return false;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "mbox-bench: mboxd ended with status %d\n",
			status);
		return false;
	}
	return true;
}

/* Wait up to 120 s for "READY=1" on the datagram socket fd. */
static int
wait_ready(Broker *b, int fd)
{
	char buf[4096];
	double deadline = now_s() + 120;

	while (now_s() < deadline) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t k;

		if (poll(&p, 1, 100) < 0 && errno != EINTR)
			return -errno;
		if (broker_exited(b))
			return -1;
		if (!(p.revents & POLLIN))
			continue;
		k = recv(fd, buf, sizeof(buf) - 1, 0);
		if (k < 0)
			continue;
		buf[k] = '\0';
		/* One variable a line; READY=1 may come with STATUS=. */
		for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n"))
			if (!strcmp(l, "READY=1"))
				return 0;
	}
	fprintf(stderr, "mbox-bench: no READY=1 from %s within 120 s\n",
		b->mboxd);
	return -ETIMEDOUT;
}

int
broker_restart_ready(Broker *b, double *secs)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char env[sizeof(sa.sun_path) + 32];
	double t0;
	int fd, r;

	if (!b->pid)
		return -ESRCH;
	/* dir is at most 60 + 20 bytes (bench_tmpdir): it fits. */
	if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%.80s/notify",
		     b->dir) >= (int)sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	unlink(sa.sun_path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		fprintf(stderr, "mbox-bench: bind %s: %s\n", sa.sun_path,
			strerror(errno));
		close(fd);
		return r;
	}
	snprintf(env, sizeof(env), "NOTIFY_SOCKET=%s", sa.sun_path);
	if (!broker_kill(b)) {
		close(fd);
		unlink(sa.sun_path);
		return -1;
	}
	t0 = now_s();
	r = broker_spawn(b, env);
	if (r == 0)
		r = wait_ready(b, fd);
	*secs = now_s() - t0;
	close(fd);
	unlink(sa.sun_path);
	return r;
}

void
broker_stop(Broker *b, bool keep)
{
	static const char *const files[] = {
		"mbox.sock",	   "mbox.db",	"mbox.db-wal", "mbox.db-shm",
		"mbox.db-reserve", "mboxd.log", "notify"};
	char path[PATH_MAX + 16];

	if (!b->dir[0])
		return;
	if (b->pid && !broker_kill(b))
		keep = true;
	if (keep) {
		fprintf(stderr, "mbox-bench: broker files kept in %s\n",
			b->dir);
		b->dir[0] = '\0';
		return;
	}
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", b->dir, files[i]);
		unlink(path);
	}
	if (rmdir(b->dir) < 0)
		fprintf(stderr, "mbox-bench: rmdir %s: %s\n", b->dir,
			strerror(errno));
	b->dir[0] = '\0';
}

long
broker_status_kib(const Broker *b, const char *field)
{
	char path[64], line[256];
	size_t len = strlen(field);
	long v = -1;
	FILE *f;

	if (!b->pid)
		return -1;
	snprintf(path, sizeof(path), "/proc/%ld/status", (long)b->pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, len) && line[len] == ':') {
			v = strtol(line + len + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

long long
broker_file_bytes(const Broker *b, const char *suffix)
{
	char path[PATH_MAX + 16];
	struct stat st;

	snprintf(path, sizeof(path), "%s%s", b->db, suffix);
	if (stat(path, &st) < 0)
		return errno == ENOENT ? 0 : -1;
	return (long long)st.st_size;
}

int
raise_nofile(size_t n)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -errno;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= n)
		return 0;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < n) {
		fprintf(stderr,
			"mbox-bench: %zu file descriptors needed, the hard "
			"limit is %llu\n",
			n, (unsigned long long)rl.rlim_max);
		return -EMFILE;
	}
	rl.rlim_cur = n;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -errno;
	return 0;
}
