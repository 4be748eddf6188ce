# One image for the three services; compose picks the service with `command`.
# Node 24 runs the TypeScript sources directly, so there is no build stage.
FROM node:24-slim

ENV NODE_ENV=production
WORKDIR /app

# Workspace manifests live next to the sources, so the install needs the whole tree
# (.dockerignore keeps node_modules, caches and local state out of the context).
COPY --chown=node:node . .
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

USER node
STOPSIGNAL SIGTERM
CMD ["node", "services/push-api/src/main.ts"]
