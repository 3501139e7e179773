/*
 * reserve.c - disk space kept aside so that a full disk can be drained.
 */
#include "config.h"

#include "store/reserve.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

struct ReserveFile {
	char path[PATH_MAX];
	char dir[PATH_MAX]; /* what statvfs is asked about */
	uint64_t size;
	int fd; /* -1 until first taken */
	bool held;
	uint64_t kept;	   /* bytes the file holds while not held */
	bool short_before; /* the file held less than size when tried */
	char errmsg[PATH_MAX + 200];
};

static int reserve_fail(ReserveFile *rf, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int
reserve_fail(ReserveFile *rf, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rf->errmsg, sizeof(rf->errmsg), fmt, ap);
	va_end(ap);
	return err;
}

int
reserve_file_new(ReserveFile **out, const char *path, uint64_t size)
{
	ReserveFile *rf;
	const char *slash = strrchr(path, '/');
	size_t len = strlen(path);

	*out = NULL;
	if (len >= sizeof(rf->path))
		return -ENAMETOOLONG;
	rf = calloc(1, sizeof(*rf));
	if (!rf)
		return -ENOMEM;
	memcpy(rf->path, path, len + 1);
	if (!slash)
		strcpy(rf->dir, ".");
	else if (slash == path)
		strcpy(rf->dir, "/");
	else
		snprintf(rf->dir, sizeof(rf->dir), "%.*s", (int)(slash - path),
			 path);
	rf->size = size;
	rf->fd = -1;
	*out = rf;
	return 0;
}

void
reserve_file_free(ReserveFile *rf)
{
	if (!rf)
		return;
	if (rf->fd >= 0)
		close(rf->fd);
	free(rf);
}

int
reserve_file_disk_free(const ReserveFile *rf, uint64_t *out)
{
	struct statvfs sv;

	if (statvfs(rf->dir, &sv) < 0)
		return -errno;
	/* Root's writes may use the blocks the file system keeps for it,
	 * and so do mboxd's when it runs as root. */
	*out = (uint64_t)(geteuid() == 0 ? sv.f_bfree : sv.f_bavail) *
	       sv.f_frsize;
	return 0;
}

int
reserve_file_take(ReserveFile *rf)
{
	struct stat st;
	uint64_t free_bytes = 0, holds;
	int r;

	if (rf->held || rf->size == 0)
		return rf->held ? 0 : reserve_fail(rf, -EINVAL, "no reserve");
	if (rf->fd < 0)
		rf->fd = open(rf->path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (rf->fd < 0 && errno != ENOENT)
		return reserve_fail(rf, -errno, "cannot open %s: %s", rf->path,
				    strerror(errno));
	memset(&st, 0, sizeof(st));
	if (rf->fd >= 0 && fstat(rf->fd, &st) < 0)
		return reserve_fail(rf, -errno, "cannot stat %s: %s", rf->path,
				    strerror(errno));
	if (rf->fd >= 0 && !S_ISREG(st.st_mode))
		return reserve_fail(rf, -EINVAL, "%s is not a regular file",
				    rf->path);
	holds = (uint64_t)st.st_blocks * 512;
	if (holds > (uint64_t)st.st_size)
		holds = (uint64_t)st.st_size;
	rf->short_before = rf->fd >= 0 && holds < rf->size;
	/* Until taken, what it holds is there to give back. */
	rf->kept = holds < rf->size ? holds : rf->size;
	/* A reserve left held by the last run is taken over as it is, even
	 * on a disk that has filled since: it is what a full disk needs. */
	if (holds < rf->size) {
		r = reserve_file_disk_free(rf, &free_bytes);
		if (r < 0)
			return reserve_fail(rf, r,
					    "cannot measure the free "
					    "space of %s: %s",
					    rf->dir, strerror(-r));
		if (free_bytes + holds < rf->size * 2)
			return reserve_fail(
				rf, -ENOSPC,
				"%llu bytes free on the disk of %s, and "
				"taking a reserve of %llu needs twice that",
				(unsigned long long)(free_bytes + holds),
				rf->dir, (unsigned long long)rf->size);
	}
	/* Created only once it can be taken: a file that holds less was
	 * released (reserve_file_was_short). */
	if (rf->fd < 0)
		rf->fd = open(rf->path,
			      O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (rf->fd < 0)
		return reserve_fail(rf, -errno, "cannot create %s: %s",
				    rf->path, strerror(errno));
	if ((uint64_t)st.st_size > rf->size &&
	    ftruncate(rf->fd, (off_t)rf->size) < 0)
		return reserve_fail(rf, -errno, "cannot cut %s: %s", rf->path,
				    strerror(errno));
	do
		r = posix_fallocate(rf->fd, 0, (off_t)rf->size);
	while (r == EINTR);
	if (r != 0) {
		/* Whatever this call got goes back; what the file held
		 * before stays as it was. */
		if (holds < rf->size && ftruncate(rf->fd, (off_t)holds) < 0) {
			/* nothing more to do: the error below says it all */
		}
		return reserve_fail(
			rf, -r, "cannot allocate %llu bytes to %s: %s",
			(unsigned long long)rf->size, rf->path, strerror(r));
	}
	rf->held = true;
	rf->kept = 0;
	return 0;
}

int
reserve_file_release(ReserveFile *rf)
{
	return reserve_file_release_part(rf, 0);
}

int
reserve_file_release_part(ReserveFile *rf, uint64_t keep)
{
	if (keep >= reserve_file_kept(rf))
		return 0;
	if (ftruncate(rf->fd, (off_t)keep) < 0)
		return reserve_fail(rf, -errno,
				    "cannot cut %s to %llu bytes: %s", rf->path,
				    (unsigned long long)keep, strerror(errno));
	rf->held = false;
	rf->kept = keep;
	return 0;
}

uint64_t
reserve_file_kept(const ReserveFile *rf)
{
	return rf->held ? rf->size : rf->kept;
}

bool
reserve_file_was_short(const ReserveFile *rf)
{
	return rf->short_before;
}

bool
reserve_file_held(const ReserveFile *rf)
{
	return rf->held;
}

uint64_t
reserve_file_size(const ReserveFile *rf)
{
	return rf->size;
}

const char *
reserve_file_path(const ReserveFile *rf)
{
	return rf->path;
}

const char *
reserve_file_errmsg(const ReserveFile *rf)
{
	return rf->errmsg;
}
