/*
 * standalone.c - a main for the fuzz targets when libFuzzer is not there
 * (builds without --enable-fuzzing): runs LLVMFuzzerTestOneInput once over
 * each file named on the command line, and over every file of each
 * directory named, in name order so that a failure is reproducible.
 *
 * Exit status 0 when every input ran; 1 when a file could not be read or
 * no input at all was found (an empty corpus must not pass silently). A
 * bug found by an input aborts the program, as under libFuzzer.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/fuzz/fuzz.h"

/* Inputs larger than this are not seeds: refuse rather than guess. */
#define INPUT_MAX (16u * 1024 * 1024)

static int
run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long size;
	int r = -1;

	if (!f) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fseek(f, 0, SEEK_END) < 0 || (size = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) < 0 || (unsigned long)size > INPUT_MAX) {
		fprintf(stderr, "%s: cannot size it, or over %u bytes\n", path,
			INPUT_MAX);
		goto out;
	}
	/* One byte more so that malloc(0) never happens. */
	buf = malloc((size_t)size + 1);
	if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
		fprintf(stderr, "%s: cannot read it\n", path);
		goto out;
	}
	fprintf(stderr, "running %s (%ld bytes)\n", path, size);
	LLVMFuzzerTestOneInput(buf, (size_t)size);
	r = 0;
out:
	free(buf);
	fclose(f);
	return r;
}

static int
cmp_names(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int
skip_dots(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

/* Run every regular file of dir; returns how many, or -1. */
static int
run_dir(const char *dir)
{
	struct dirent **names;
	int n = scandir(dir, &names, skip_dots, cmp_names);
	int ran = 0, failed = 0;

	if (n < 0) {
		fprintf(stderr, "%s: %s\n", dir, strerror(errno));
		return -1;
	}
	for (int i = 0; i < n; i++) {
		char path[4096];
		struct stat st;

		if (snprintf(path, sizeof(path), "%s/%s", dir,
			     names[i]->d_name) < (int)sizeof(path) &&
		    stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			if (run_file(path) < 0)
				failed = 1;
			else
				ran++;
		}
		free(names[i]);
	}
	free(names);
	return failed ? -1 : ran;
}

int
main(int argc, char **argv)
{
	int ran = 0;

	LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++) {
		struct stat st;
		int n;

		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		n = S_ISDIR(st.st_mode)	    ? run_dir(argv[i])
		    : run_file(argv[i]) < 0 ? -1
					    : 1;
		if (n < 0)
			return 1;
		ran += n;
	}
	if (ran == 0) {
		fprintf(stderr, "usage: %s FILE|DIR...: no input found\n",
			argv[0]);
		return 1;
	}
	fprintf(stderr, "%d inputs ran\n", ran);
	return 0;
}
