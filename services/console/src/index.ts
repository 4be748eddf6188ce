// The only public entry of @pushline/console: the operator console and the demo device page.
export { assembleConsole } from './assemble.ts';
export type { AssembleConsoleOptions, AssembledConsole } from './assemble.ts';
export { SESSION_COOKIE, CSRF_HEADER } from './app.ts';
export { identityRows, stageRows, STAGES } from './stages.ts';
export type { IdentityRow, StageRow, Scrape } from './stages.ts';
