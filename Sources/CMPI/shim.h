#ifndef FLAMINGO_CMPI_SHIM_H
#define FLAMINGO_CMPI_SHIM_H
#include <mpi.h>
// MPI's handles and constants are macros Swift cannot import; expose them as functions.
static inline MPI_Comm flamingo_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype flamingo_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype flamingo_mpi_int(void) { return MPI_INT; }
static inline int flamingo_mpi_any_source(void) { return MPI_ANY_SOURCE; }
static inline int flamingo_mpi_any_tag(void) { return MPI_ANY_TAG; }
static inline MPI_Status *flamingo_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline int flamingo_mpi_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }
static inline int flamingo_mpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int flamingo_mpi_success(void) { return MPI_SUCCESS; }
static inline MPI_Request flamingo_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline int flamingo_mpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
static inline MPI_Errhandler flamingo_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline int flamingo_status_source(const MPI_Status *status) { return status->MPI_SOURCE; }
static inline int flamingo_status_tag(const MPI_Status *status) { return status->MPI_TAG; }
#endif
