export function viewerRequest(request: Request): Request {
  const x: number = ;
  return request;
}
