// Errors the node API answers with: an HTTP status, a stable machine-readable code and a message for humans.

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) { super(message); this.name = "ApiError"; }
}

export function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", "cache-control": "no-store", "x-content-type-options": "nosniff", ...headers },
  });
}

export function errorResponse(e: ApiError): Response {
  return json(e.status, { error: e.code, message: e.message });
}
