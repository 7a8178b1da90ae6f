import { expect, it, describe } from 'vitest';

import createAction from '../actions/get-repo.js';

describe('github get-repo tests', () => {
    const nangoMock = new global.vitest.NangoActionMock({
        dirname: __dirname,
        name: 'get-repo',
        Model: 'ActionOutput_github_getrepo'
    });

    it('should output the action output that is expected', async () => {
        const input = await nangoMock.getInput();
        const response = await createAction.exec(nangoMock, input);
        const output = await nangoMock.getOutput();

        expect(response).toEqual(output);
    });
});
