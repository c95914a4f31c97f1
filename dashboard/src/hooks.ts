// How any failure reads as the admin API's error, for the views that say what went wrong.
import { ApiError } from "./api";

export function asApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  return new ApiError(0, error instanceof Error ? error.message : String(error));
}
