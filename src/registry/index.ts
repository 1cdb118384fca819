// Public surface of the registry client.
export * from './errors';
export * from './credentials';
export * from './hosts';
export * from './auth';
export * from './retry';
export * from './client';
export * from './referrers';
export * from './range-reader';
export * from './blob-source';
export * from './background-download';
export * from './from-config';
