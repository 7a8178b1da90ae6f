// The scripts this project builds (sluice compile reads these lines).
import './github/actions/get-repo.js';
import './github/actions/fetch-url.js';
import './github/syncs/issues.js';
