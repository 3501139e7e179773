/* placeholder: being written */
#include "config.h"
#include "client/topic.h"
