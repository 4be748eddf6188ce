// The only public entry of @pushline/console: the operator console and the demo device page.
export { assembleConsole } from './assemble.ts';
export type { AssembledConsole } from './assemble.ts';
export { identityRows, stageRows } from './stages.ts';
export type { Scrape } from './stages.ts';
